"""Many problems per step: N problems stepped one after the other vs as one grouped network.

    python bench/grouped.py [--device cpu|cuda] [--sizes 64,128] [--problems 1,2,4]
        [--iters 10] [--repeats 3] [--methods dip,dip-tv,deepred] [--json PATH]

Each of the N problems is its own synthetic noisy image (σ = 25, its own seed) with its own
method (cycling through ``--methods``; DeepRED's denoiser is off, λ = 0, so that only the
network step is timed) and seed. "separate": each problem's own algorithm, stepped in turn;
"grouped": the same problems in one :class:`~deeprestore.solvers.grouping.ProblemGroup` (one
forward,
backward and Adam for all). Reported per size and N: seconds per round (every problem one
iteration), per problem-iteration, the grouped/separate ratio, the grouped throughput
(problem-iterations per second) and, on CUDA, the peak memory of each way. Warm-up rounds are
discarded; the two ways are interleaved over ``--repeats`` and the medians kept, so that a busy
machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import Execution
from deeprestore.metrics import psnr_rgb
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.grouping import ProblemGroup


def _problem(size: int, seed: int, device: torch.device) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 3, size, size, generator=gen) * 0.6 + 0.2
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return Problem(noisy.to(device), Identity(), noisy.clone().to(device), 25.0,
                   clean.to(device), psnr_rgb)


def _settings(method: str, seed: int) -> Settings:
    extra = {"lam": 0.0, "mu": 0.5} if method == "deepred" else {}
    return Settings(method=method, iterations=10**6, seed=seed, runs=1, log_every=10**6,
                    **extra).validate()  # type: ignore[arg-type]


def _rounds(algorithms: list, rounds: int, device: torch.device) -> float:
    """Seconds per round: every algorithm one update."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(rounds):
        for algorithm in algorithms:
            algorithm.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - tic) / rounds


def measure(size: int, count: int, methods: list[str], iters: int, repeats: int,
            device: torch.device) -> dict[str, float]:
    cases = [(_problem(size, 100 + i, device), _settings(methods[i % len(methods)], i + 1))
             for i in range(count)]
    peak: dict[str, float | None] = {"separate": None, "grouped": None}
    ways: dict[str, list] = {}
    for way in ("separate", "grouped"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ways[way] = [make_algorithm(p, s, device) for p, s in cases]
        if way == "grouped":
            ProblemGroup(ways[way], Execution())
        _rounds(ways[way], 2, device)  # warm-up
        if device.type == "cuda":
            peak[way] = torch.cuda.max_memory_allocated(device) / 2**20
    times: dict[str, list[float]] = {"separate": [], "grouped": []}
    for _ in range(repeats):
        for way in ("separate", "grouped"):
            times[way].append(_rounds(ways[way], iters, device))
    for algorithms in ways.values():
        for algorithm in algorithms:
            algorithm.close()
    sep, grp = statistics.median(times["separate"]), statistics.median(times["grouped"])
    return {"size": size, "problems": count, "peak_mib": peak, "separate_s_per_round": sep,
            "grouped_s_per_round": grp, "grouped_s_per_problem_it": grp / count,
            "ratio": grp / sep, "grouped_problem_its_per_s": count / grp,
            "separate_runs": times["separate"], "grouped_runs": times["grouped"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--problems", default="1,2,4")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="dip,dip-tv,deepred")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("size  N  separate s/round  grouped s/round  grouped s/problem-it  ratio  "
          "problem-it/s  peak MiB (separate, grouped; CUDA)")
    for size in (int(v) for v in args.sizes.split(",")):
        for count in (int(v) for v in args.problems.split(",")):
            row = measure(size, count, args.methods.split(","), args.iters, args.repeats,
                          device)
            rows.append(row)
            print(f"{size:4d} {count:2d}  {row['separate_s_per_round']:16.3f}  "
                  f"{row['grouped_s_per_round']:15.3f}  {row['grouped_s_per_problem_it']:20.3f}"
                  f"  {row['ratio']:5.2f}  {row['grouped_problem_its_per_s']:12.2f}  "
                  f"{row['peak_mib']['separate']}, {row['peak_mib']['grouped']}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
