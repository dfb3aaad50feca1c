"""Ops and host reads per iteration of each network method (issue 42), on the CPU at 32 px.

    PYTHONPATH=. python bench/step_ops.py [--size 32]

Counts every dispatched aten op and every host read (tests/op_counting.py) per iteration
through ``deeprestore.restore`` (denoise, float32, the presets' defaults: DIP with its 2 runs,
Table 1's network), and per round of a group of 4 problems (dip, dip, deepred, dip-tv) through
``restore_together``; one torch thread. Prints one line per case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from op_counting import per_iteration  # noqa: E402
from tiny_problems import tiny_denoising_problem  # noqa: E402

import deeprestore  # noqa: E402
from deeprestore.config.settings import Settings  # noqa: E402
from deeprestore.solvers.runner import restore_together  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = np.random.default_rng(0).random((args.size, args.size, 3)).astype(np.float32)
    for method in ("dip", "dip-tv", "deepred"):
        def run(iterations: int, method: str = method) -> None:
            deeprestore.restore(image, method=method, iterations=iterations, log_every=10_000,
                                seed=0, precision="float32", sigma=25)

        ops, reads, where = per_iteration(run, 2, 5)
        print(f"{method:8s} ops/iteration {ops:7.1f}  host reads/iteration {reads:.1f} "
              f"{dict(where) or ''}")
    methods = ["dip", "dip", "deepred", "dip-tv"]
    problems = [tiny_denoising_problem(args.size) for _ in methods]

    def grouped(iterations: int) -> None:
        settings = [Settings(method=m, iterations=iterations, log_every=10_000, seed=seed,
                             backtrack_drop=5.0 if m == "dip" else 0.0,
                             **({"lam": 0.0, "mu": 0.5} if m == "deepred" else {})).validate()
                    for seed, m in enumerate(methods)]
        restore_together(problems, settings, device="cpu")

    ops, reads, where = per_iteration(grouped, 2, 5)
    print(f"group of 4 ops/round {ops:7.1f}  host reads/round {reads:.1f} {dict(where) or ''}")


if __name__ == "__main__":
    main()
