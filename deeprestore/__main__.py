"""The command's entry point (``deeprestore`` and ``python -m deeprestore``).

It imports the command line (and with it torch) only inside :func:`run`, so that a Ctrl-C or
SIGTERM while the libraries load — several seconds on a busy machine — ends like one during
a run: one line on stderr and exit code 130 (143), no traceback.
"""

from __future__ import annotations

import os
import signal


def run() -> None:
    """Load :mod:`deeprestore.cli`, run its ``main``; an interrupt while loading: exit 130/143."""

    def leave(signum: int, frame: object) -> None:
        # Exit here rather than raise: an exception raised inside a library's import can be
        # caught there and leave it half-loaded (seen: SIGTERM inside numpy's import under
        # scipy ended with an AttributeError traceback). Loading writes nothing, so there is
        # nothing to clean up.
        word = "terminated" if signum == signal.SIGTERM else "interrupted"
        os.write(2, f"deeprestore: {word}\n".encode())
        os._exit(128 + signum)  # the command line's rule (deeprestore.cli.main)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, leave)
    from deeprestore.cli.main import main

    main()  # it installs its own handlers for both signals, just before it starts the command


if __name__ == "__main__":
    run()
