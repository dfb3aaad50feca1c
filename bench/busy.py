"""Does a run keep its speed on a machine busy with other work? (``--threads auto``)

    python bench/busy.py [--busy 2] [--iters 30] [--repeats 2] [--json PATH]

Runs ``deeprestore demo`` (64 px DeepRED, ``denoise-quick``) alone, then beside ``--busy``
single-thread busy loops (other users' work), with the default ``--threads auto`` and with
``--threads`` forced to every core (torch's own default before ``auto``). Prints seconds per
iteration (the manifest's seconds over its iterations, median of the repeats) and each case's
speed as a fraction of the demo alone. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "while True: pass"


def demo_seconds_per_iteration(iters: int, threads: str) -> float:
    """One ``deeprestore demo`` run in a fresh process: seconds per iteration."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "deeprestore", "demo", "-o", out, "--iters",
                        str(iters), "--threads", threads, "-q"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        manifest = json.loads((Path(out) / "noisy_deepred.json").read_text())
    return manifest["seconds"] / manifest["iterations"]


def measure(iters: int, threads: str, busy: int, repeats: int) -> float:
    """Median seconds per iteration of the demo beside ``busy`` busy loops."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let the loops show up in /proc/stat
        return statistics.median(demo_seconds_per_iteration(iters, threads)
                                 for _ in range(repeats))
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = str(len(os.sched_getaffinity(0)))
    cases = [("alone", "auto", 0), (f"beside {args.busy} busy, --threads auto", "auto",
                                      args.busy),
             (f"beside {args.busy} busy, --threads {cores}", cores, args.busy)]
    rows = []
    for label, threads, busy in cases:
        seconds = measure(args.iters, threads, busy, args.repeats)
        rows.append({"case": label, "threads": threads, "busy": busy, "s_per_it": seconds})
        print(f"{label}: {seconds:.4f} s/it", file=sys.stderr)
    alone = rows[0]["s_per_it"]
    print(f"| case ({cores} cores, {args.iters} it, median of {args.repeats}) | s/it | "
          "speed vs alone |")
    print("|---|---|---|")
    for row in rows:
        row["speed_vs_alone"] = alone / row["s_per_it"]
        print(f"| {row['case']} | {row['s_per_it']:.4f} | {row['speed_vs_alone']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
