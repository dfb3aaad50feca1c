"""Does each CPU keep its speed when the others are busy too? (Linux only)

    python bench/vcpus.py [--kernel conv|matmul|python] [--seconds 4] [--rounds 3]

Runs one single-thread kernel in a child process pinned to one CPU (``os.sched_setaffinity``),
first on each CPU alone, then on every CPU at once, and prints the milliseconds per call and each
CPU's slow-down when all are busy. Kernels: ``conv`` (a 128→128 3×3 convolution forward and
backward on a 64×64 image, the bulk of a DIP step), ``matmul`` (512×512 float32 matrix product),
``python`` (a pure-Python loop, no vector units). Rounds alternate alone/together so a machine
that changes speed during the run shows up as spread, not as a slow-down.

Why: on a CPU, ``--runs 2`` steps the two runs side by side, one per core, and an iteration waits
for the slower one; if a core slows down while the other is busy, two runs cost more than one
run on one thread (docs/performance.md, "Several runs").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

KERNELS = ("conv", "matmul", "python")


def _kernel(name: str) -> Callable[[], object]:
    if name == "python":
        def loop() -> int:
            total = 0
            for i in range(100_000):
                total += i
            return total
        return loop
    import torch

    torch.set_num_threads(1)
    if name == "matmul":
        a = torch.randn(512, 512)
        return lambda: a @ a
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(1, 128, 64, 64, requires_grad=True)
    return lambda: conv(x).sum().backward()


def child(name: str, seconds: float) -> None:
    """Time the kernel for about ``seconds`` after a short warm-up; print ms per call."""
    fn = _kernel(name)
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    print(f"{(time.perf_counter() - start) / calls * 1e3:.4f}")


def _run(cpus: list[int], name: str, seconds: float) -> list[float]:
    """ms per call of the kernel on each CPU of ``cpus``, all started at once."""
    procs = []
    for cpu in cpus:
        cmd = [sys.executable, __file__, "--child", "--kernel", name, "--seconds", str(seconds)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                      preexec_fn=lambda c=cpu: os.sched_setaffinity(0, {c})))
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"child failed with exit status {proc.returncode}")
        out.append(float(stdout.strip()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", choices=KERNELS, default="conv")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.kernel, args.seconds)
        return
    if not hasattr(os, "sched_setaffinity"):
        raise SystemExit("needs os.sched_setaffinity (Linux)")
    cpus = sorted(os.sched_getaffinity(0))
    alone: dict[int, list[float]] = {c: [] for c in cpus}
    together: dict[int, list[float]] = {c: [] for c in cpus}
    for _ in range(args.rounds):
        for cpu in cpus:
            alone[cpu] += _run([cpu], args.kernel, args.seconds)
        for cpu, ms in zip(cpus, _run(cpus, args.kernel, args.seconds), strict=True):
            together[cpu].append(ms)
    print(f"kernel {args.kernel}, {args.rounds} rounds of {args.seconds:g} s, CPUs {cpus}")
    print(f"{'cpu':>4} {'alone ms':>10} {'all busy ms':>12} {'slow-down':>10}")
    for cpu in cpus:
        a, t = statistics.median(alone[cpu]), statistics.median(together[cpu])
        print(f"{cpu:>4} {a:>10.3f} {t:>12.3f} {t / a:>9.2f}x")
    fastest_alone = min(statistics.median(v) for v in alone.values())
    slowest_busy = max(statistics.median(v) for v in together.values())
    print(f"slowest CPU with all busy / fastest CPU alone: {slowest_busy / fastest_alone:.2f}x")


if __name__ == "__main__":
    main()
