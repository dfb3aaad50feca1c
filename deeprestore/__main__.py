"""The command's entry point (``deeprestore`` and ``python -m deeprestore``).

It imports the command line (and with it torch) only inside :func:`run`, so that a Ctrl-C or
SIGTERM while the libraries load — several seconds on a busy machine — ends like one during
a run: one line on stderr and exit code 130 (143), no traceback.
"""

from __future__ import annotations

import signal
import sys


def run() -> None:
    """Load :mod:`deeprestore.cli`, run its ``main``; an interrupt while loading: exit 130/143."""
    received: list[int] = []

    def note(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        from deeprestore.cli.main import main
    except KeyboardInterrupt:
        signum = received[-1] if received else signal.SIGINT  # a KeyboardInterrupt of its own
        word = "terminated" if signum == signal.SIGTERM else "interrupted"
        sys.stderr.write(f"deeprestore: {word}\n")
        sys.exit(128 + signum)  # the command line's rule (deeprestore.cli.main)
    for number, handler in previous.items():
        signal.signal(number, handler)
    main()


if __name__ == "__main__":
    run()
