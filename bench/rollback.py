"""What does NaN-rollback insurance cost? DIP with and without the in-memory good-state copies.

    python bench/rollback.py [--size 64] [--iters 60] [--repeats 3] [--snapshot-every 100]

Runs the same DIP restore alternately with ``max_rollbacks`` 3 and 0 (best of ``--repeats``
each) and prints the ratio. ``--snapshot-every 10`` copies the state at every logged row.
"""

from __future__ import annotations

import argparse
import time

import torch

from deeprestore.control import RunControl
from deeprestore.engine import Problem, restore
from deeprestore.operators import Identity
from deeprestore.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--snapshot-every", type=int, default=100)
    args = parser.parse_args()
    y = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    problem = Problem(y=y, operator=Identity(), x_init=y, sigma=25.0)
    times: dict[int, list[float]] = {0: [], 3: []}
    for _ in range(args.repeats):
        for rollbacks in times:
            settings = Settings(method="dip", iterations=args.iters, log_every=10).validate()
            control = RunControl(max_rollbacks=rollbacks, snapshot_every=args.snapshot_every)
            start = time.perf_counter()
            restore(problem, settings, control=control)
            times[rollbacks].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.size}×{args.size}, {args.iters} DIP iterations, snapshot every "
          f"{args.snapshot_every}: without {best[0]:.2f} s, with {best[3]:.2f} s, "
          f"ratio {best[3] / best[0]:.3f}")


if __name__ == "__main__":
    main()
