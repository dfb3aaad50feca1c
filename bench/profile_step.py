"""Where one network step's time goes: torch's profiler over a few DIP steps of the real engine.

    python bench/profile_step.py [--size 256] [--precision bf16] [--steps 5] [--top 15]
                                 [--channels 128] [--layout auto|nchw|channels-last]

Builds the ``bench/speed.py`` problem (astronaut, σ 25) and a DIP algorithm through
:func:`deeprestore.solvers.factory.make_algorithm` (so the step is the engine's own: forward,
loss, backward, fused Adam, EMA), warms it up for two steps, then profiles ``--steps`` steps
and prints the operators with the most self CPU time (a Markdown table: op, calls per step,
ms per step, share). ``--layout``: the CPU network's memory layout (``auto``: what the engine
picks for the precision).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.speed import make_problem
from deeprestore.config.settings import Settings
from deeprestore.execution import Execution
from deeprestore.solvers.factory import make_algorithm

LAYOUTS = {"auto": None, "nchw": False, "channels-last": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="auto")
    args = parser.parse_args()
    device = torch.device("cpu")
    problem = make_problem(args.size)
    settings = Settings(method="dip", iterations=args.steps + 2, precision=args.precision,
                        net_channels=args.channels)
    execution = Execution(cpu_channels_last=LAYOUTS[args.layout])
    algorithm = make_algorithm(problem, settings, device, execution=execution)
    for _ in range(2):
        algorithm.update()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            algorithm.update()
    algorithm.close()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.size}², {args.precision}, layout {args.layout}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}: {total / args.steps / 1e3:.1f} ms of self CPU "
          "time per step")
    print("| op | calls / step | ms / step | share |")
    print("|---|---:|---:|---:|")
    for event in events[:args.top]:
        print(f"| `{event.key}` | {event.count / args.steps:g} | "
              f"{event.self_cpu_time_total / args.steps / 1e3:.1f} | "
              f"{100 * event.self_cpu_time_total / total:.1f} % |")


if __name__ == "__main__":
    main()
