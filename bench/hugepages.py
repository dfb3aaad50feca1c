"""What transparent huge pages for torch's CPU tensors are worth: the engine with and without.

    python bench/hugepages.py [--sizes 64,256] [--methods dip,dip-runs2] [--rounds 10]
                              [--warmup 3] [--json PATH]

torch's CPU allocator asks the kernel for transparent huge pages for tensors of 2 MiB and more
when ``THP_MEM_ALLOC_ENABLE=1`` (read once, at its first allocation; deeprestore sets it when
imported, see :mod:`deeprestore.huge_pages`). Each iteration allocates and frees the network's
activations; with 4 KiB pages the kernel faults in and zeroes every new page of them.

For each size this starts two persistent worker processes, one with ``THP_MEM_ALLOC_ENABLE=0``
and one with ``=1``, each holding the real engine's algorithm for every method
(:func:`deeprestore.engine.make_algorithm`, the settings of ``bench/speed.py``). The parent
steps them in turn, one iteration at a time, rotating the order every round, so both arms see
the machine in the same state; the first ``--warmup`` rounds are discarded. Reports seconds per
iteration (median), on/off ratio, page faults per iteration (minor faults of the worker) and the
worker's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ARMS = {"off": "0", "on": "1"}


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(size: int, methods: list[str]) -> None:
    """Child: build every method's algorithm, then answer "NAME" with "seconds faults" lines."""
    import torch
    from speed import build_algorithms, make_problem

    algorithms = build_algorithms(make_problem(size), methods, torch.device("cpu"), 10**6,
                                  "float32")
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "peak":
                print(_peak_rss_mib(), flush=True)
                continue
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            algorithms[command].update()
            seconds = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            print(seconds, faults, flush=True)
    finally:
        for algorithm in algorithms.values():
            algorithm.close()


def _start(arm: str, size: int, methods: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": ARMS[arm]}
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(size), ",".join(methods)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {arm} worker did not start")
    return child


def _ask(child: subprocess.Popen[str], command: str) -> list[str]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(command + "\n")
    child.stdin.flush()
    return child.stdout.readline().split()


def measure(size: int, methods: list[str], rounds: int, warmup: int) -> list[dict[str, Any]]:
    """One row per method: both arms' seconds per iteration, faults per iteration, peak RSS."""
    children = {arm: _start(arm, size, methods) for arm in ARMS}
    try:
        jobs = [(arm, name) for name in methods for arm in ARMS]
        seconds: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
        faults: dict[tuple[str, str], list[int]] = {job: [] for job in jobs}
        for round_ in range(warmup + rounds):
            shift = round_ % len(jobs)
            for arm, name in jobs[shift:] + jobs[:shift]:
                spent, faulted = _ask(children[arm], name)
                if round_ >= warmup:
                    seconds[(arm, name)].append(float(spent))
                    faults[(arm, name)].append(int(faulted))
        peak = {arm: float(_ask(child, "peak")[0]) for arm, child in children.items()}
    finally:
        for child in children.values():
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
    rows = []
    for name in methods:
        row: dict[str, Any] = {"size": size, "method": name}
        for arm in ARMS:
            row[f"seconds_{arm}"] = statistics.median(seconds[(arm, name)])
            row[f"faults_{arm}"] = statistics.median(faults[(arm, name)])
            row[f"peak_mib_{arm}"] = peak[arm]  # the worker's, all its methods together
        row["ratio_on_off"] = row["seconds_on"] / row["seconds_off"]
        row["round_ratios"] = [on / off for on, off in zip(
            seconds[("on", name)], seconds[("off", name)], strict=True)]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--methods", default="dip,dip-runs2")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _worker(int(args.child[0]), args.child[1].split(","))
        return

    import torch
    from rich.console import Console
    from rich.table import Table

    methods = args.methods.split(",")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows += measure(size, methods, args.rounds, args.warmup)
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    selected = re.search(r"\[(\w+)\]", thp.read_text()) if thp.exists() else None
    kernel_thp = selected.group(1) if selected else "unknown"
    table = Table(title=f"huge pages for torch CPU tensors (torch {torch.__version__}, "
                        f"{torch.get_num_threads()} threads, kernel THP: {kernel_thp})")
    for column in ("size", "method", "s/it off", "s/it on", "on/off", "faults off",
                   "faults on", "RSS off", "RSS on"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["size"]), row["method"], f"{row['seconds_off']:.4f}",
                      f"{row['seconds_on']:.4f}", f"{row['ratio_on_off']:.3f}",
                      f"{row['faults_off']:.0f}", f"{row['faults_on']:.0f}",
                      f"{row['peak_mib_off']:.0f}", f"{row['peak_mib_on']:.0f}")
    Console(width=120).print(table)
    print("faults: minor page faults per iteration; RSS: the worker's peak, MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": platform.node(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "kernel_thp": kernel_thp, "rounds": args.rounds, "warmup": args.warmup,
            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
