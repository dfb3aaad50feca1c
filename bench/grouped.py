"""Many problems per step: N problems stepped one after the other vs as one grouped network.

    python bench/grouped.py [--device cpu|cuda] [--sizes 64,128] [--problems 1,2,4]
        [--iters 10] [--repeats 3] [--precision float32|tf32|bf16]
        [--methods dip,dip-tv,deepred] [--json PATH]

Each of the N problems is its own synthetic noisy image (σ = 25, its own seed) with its own
method (cycling through ``--methods``; DeepRED's denoiser is off, λ = 0, so that only the
network step is timed) and seed. "separate": each problem's own algorithm, stepped in turn;
"grouped": the same problems in one :class:`~deeprestore.solvers.grouping.ProblemGroup` (one
forward, backward and Adam for all). Reported per size and N: seconds per round (every problem
one iteration), per problem-iteration, the grouped/separate ratio, the grouped throughput
(problem-iterations per second) and, on CUDA, the peak memory of each way.

The backends are configured as a run configures them
(:func:`~deeprestore.execution.configure_backends`: cuDNN autotuning on, TF32 only where the
precision asks for it). The two ways run one after the other: the separate way is built, warmed
up and timed (``--repeats`` times ``--iters`` rounds, the median kept), then freed (CUDA cache
emptied, peak statistics reset) before the grouped way is built, so that each way's peak memory
is its own. Warm-up rounds (cuDNN autotuning) are discarded. Both ways run the same iterations
from the same seeds, so their outputs are compared too (``max_abs_diff``: grouping changes
nothing but rounding). :func:`measure_ways` is also used by ``bench/preset_steps.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import Execution, configure_backends
from deeprestore.metrics import psnr_rgb
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.grouping import ProblemGroup

WAYS = ("separate", "grouped")


def _problem(size: int, seed: int, device: torch.device) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 3, size, size, generator=gen) * 0.6 + 0.2
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return Problem(noisy.to(device), Identity(), noisy.clone().to(device), 25.0,
                   clean.to(device), psnr_rgb)


def _settings(method: str, seed: int, precision: str) -> Settings:
    extra = {"lam": 0.0, "mu": 0.5} if method == "deepred" else {}
    return Settings(method=method, iterations=10**6, seed=seed, runs=1, log_every=10**6,
                    precision=precision, **extra).validate()  # type: ignore[arg-type]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Collect what is no longer referenced; on CUDA empty the cache and reset the peak."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reset_peak(device: torch.device) -> None:
    """Start a new peak (after a warm-up: cuDNN's autotuning takes workspaces of GBs once)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """CUDA's peak allocated memory since the last reset (MiB); None on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _rounds(algorithms: list, rounds: int, device: torch.device) -> float:
    """Seconds per round: every algorithm one update."""
    sync(device)
    tic = time.perf_counter()
    for _ in range(rounds):
        for algorithm in algorithms:
            algorithm.update()
    sync(device)
    return (time.perf_counter() - tic) / max(rounds, 1)


def _psnr(estimate: torch.Tensor, reference: torch.Tensor | None) -> float | None:
    if reference is None:
        return None
    return float(psnr_rgb(estimate.detach().float().clamp(0, 1).cpu(), reference.float().cpu()))


def measure_ways(cases: Sequence[tuple[Problem, Settings]], iters: int, repeats: int,
                 warmup: int, device: torch.device,
                 build: Callable[[Problem, Settings], Any] | None = None,
                 ways: Sequence[str] = WAYS) -> dict[str, Any]:
    """Time ``cases`` (problem, settings) stepped one after the other ("separate") and as one
    :class:`ProblemGroup` ("grouped"), one way after the other, each freed before the next.

    ``build(problem, settings)`` makes one algorithm (default: :func:`make_algorithm` on
    ``device``). The backends are configured for the cases' precision first. Returns
    ``{way: {"s_per_round", "runs", "peak_mib", "setup_s", "psnr", "estimates"}}`` (the
    estimates on the CPU, one per case, after ``warmup + repeats × iters`` iterations) and,
    with both ways, ``max_abs_diff`` between their estimates.
    """
    build = build or (lambda problem, settings: make_algorithm(problem, settings, device))
    configure_backends(device, cases[0][1].precision)
    out: dict[str, Any] = {}
    for way in ways:
        free_memory(device)
        tic = time.perf_counter()
        algorithms = [build(problem, settings) for problem, settings in cases]
        group = ProblemGroup(algorithms, Execution()) if way == "grouped" else None
        _rounds(algorithms, warmup, device)  # cuDNN autotuning, first allocations
        setup = time.perf_counter() - tic
        warm_peak = peak_mib(device)
        reset_peak(device)
        runs = [_rounds(algorithms, iters, device) for _ in range(repeats)]
        estimates = [a.estimate().detach().float().cpu() for a in algorithms]
        out[way] = {"s_per_round": statistics.median(runs), "runs": runs,
                    "peak_mib": peak_mib(device), "peak_warmup_mib": warm_peak,
                    "setup_s": setup,
                    "psnr": [_psnr(e, p.reference) for e, (p, _) in zip(estimates, cases,
                                                                          strict=True)],
                    "estimates": estimates}
        for algorithm in algorithms:
            algorithm.close()
        del algorithms, group
    free_memory(device)
    if all(way in out for way in WAYS):
        out["max_abs_diff"] = max(
            float((a - b).abs().max()) for a, b in zip(out["separate"]["estimates"],
                                                        out["grouped"]["estimates"], strict=True))
    return out


def measure(size: int, count: int, methods: list[str], iters: int, repeats: int,
            device: torch.device, precision: str = "float32") -> dict[str, Any]:
    cases = [(_problem(size, 100 + i, device),
              _settings(methods[i % len(methods)], i + 1, precision)) for i in range(count)]
    ways = measure_ways(cases, iters, repeats, 2, device)
    sep, grp = ways["separate"]["s_per_round"], ways["grouped"]["s_per_round"]
    return {"size": size, "problems": count, "precision": precision,
            "peak_mib": {way: ways[way]["peak_mib"] for way in WAYS},
            "separate_s_per_round": sep, "grouped_s_per_round": grp,
            "grouped_s_per_problem_it": grp / count, "ratio": grp / sep,
            "grouped_problem_its_per_s": count / grp, "max_abs_diff": ways["max_abs_diff"],
            "separate_runs": ways["separate"]["runs"], "grouped_runs": ways["grouped"]["runs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--problems", default="1,2,4")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="float32", choices=("float32", "tf32", "bf16"))
    parser.add_argument("--methods", default="dip,dip-tv,deepred")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.precision}")
    print("size  N  separate s/round  grouped s/round  grouped s/problem-it  ratio  "
          "problem-it/s  peak MiB (separate, grouped; CUDA)")
    for size in (int(v) for v in args.sizes.split(",")):
        for count in (int(v) for v in args.problems.split(",")):
            row = measure(size, count, args.methods.split(","), args.iters, args.repeats,
                          device, args.precision)
            rows.append(row)
            print(f"{size:4d} {count:2d}  {row['separate_s_per_round']:16.3f}  "
                  f"{row['grouped_s_per_round']:15.3f}  {row['grouped_s_per_problem_it']:20.3f}"
                  f"  {row['ratio']:5.2f}  {row['grouped_problem_its_per_s']:12.2f}  "
                  f"{row['peak_mib']['separate']}, {row['peak_mib']['grouped']}", flush=True)
            if args.json is not None:  # after every row: a run cut short keeps what it measured
                args.json.write_text(json.dumps(
                    {"device": str(device), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "precision": args.precision,
                     "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
