"""Where one network step's time goes: torch's profiler over a few DIP steps of the real engine.

    python bench/profile_step.py [--size 256] [--precision bf16] [--steps 5] [--top 15]
                                 [--channels 128] [--layout auto|nchw|channels-last]
    python bench/profile_step.py --ablation [--size 256] [--steps 8] [--channels 128]

Builds the ``bench/speed.py`` problem (astronaut, σ 25) and a DIP algorithm through
:func:`deeprestore.solvers.factory.make_algorithm` (so the step is the engine's own: forward,
loss, backward, fused Adam, EMA), warms it up for two steps, then profiles ``--steps`` steps
and prints the operators with the most self CPU time (a Markdown table: op, calls per step,
ms per step, share). ``--layout``: the CPU network's memory layout (``auto``: what the engine
picks for the precision). The profiler inflates the convolutions' share (oneDNN's
instrumentation); compare wall times with ``--ablation``.

``--ablation``: wall time per DIP step of the bf16 step with each of this project's changes
taken out, all built at once and stepped in turn (A B C ... then the reverse, ``--steps``
rounds; the median per variant and its ratio to float32's): ``float32`` (NCHW, the paper's
arithmetic), ``bf16-nchw-as-before`` (the bf16 path before channels-last: torch's reflection
pad, which CPU autocast runs in float32, and no gradient hook), ``bf16-cl-as-before``
(channels-last, same), ``bf16-cl-pad`` (the pad kept in bf16), ``bf16`` (and the concatenation's
gradients made dense: today's path).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import deeprestore.models.skip as skip
from bench.speed import make_problem
from deeprestore.config.settings import Settings
from deeprestore.execution import Execution
from deeprestore.solvers.base import Algorithm
from deeprestore.solvers.factory import make_algorithm

LAYOUTS = {"auto": None, "nchw": False, "channels-last": True}


#: variant → (precision, CPU layout, torch's pad instead of the bf16-keeping one, gradient hook)
ABLATION: dict[str, tuple[str, bool, bool, bool]] = {
    "float32": ("float32", False, False, True),
    "bf16-nchw-as-before": ("bf16", False, True, False),
    "bf16-cl-as-before": ("bf16", True, True, False),
    "bf16-cl-pad": ("bf16", True, False, False),
    "bf16": ("bf16", True, False, True),
}


def ablation(size: int, steps: int, channels: int) -> None:
    """Print the ``--ablation`` table (module docstring)."""
    problem = make_problem(size)
    own_pad, own_test = skip.ReflectionPad, skip._channels_last
    algorithms: dict[str, Algorithm] = {}
    hooks: dict[str, Callable[[torch.Tensor], bool]] = {}
    for name, (precision, layout, torch_pad, hook) in ABLATION.items():
        skip.ReflectionPad = torch.nn.ReflectionPad2d if torch_pad else own_pad  # type: ignore
        settings = Settings(method="dip", iterations=2 * steps + 4, precision=precision,
                            net_channels=channels)
        algorithms[name] = make_algorithm(problem, settings, torch.device("cpu"),
                                          execution=Execution(cpu_channels_last=layout))
        hooks[name] = own_test if hook else (lambda x: False)
    skip.ReflectionPad = own_pad  # type: ignore[misc]
    seconds: dict[str, list[float]] = {name: [] for name in algorithms}
    for round_ in range(steps + 1):
        order = list(algorithms) if round_ % 2 == 0 else list(reversed(algorithms))
        for name in order:
            skip._channels_last = hooks[name]  # read at each forward
            tic = time.perf_counter()
            algorithms[name].update()
            if round_ > 0:  # the first round warms up
                seconds[name].append(time.perf_counter() - tic)
    skip._channels_last = own_test
    base = statistics.median(seconds["float32"])
    print(f"{size}², DIP, {channels} channels, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, median of {steps} interleaved steps")
    print("| variant | s / step | × float32 |")
    print("|---|---:|---:|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="auto")
    parser.add_argument("--ablation", action="store_true", help="see the module docstring")
    args = parser.parse_args()
    if args.ablation:
        ablation(args.size, args.steps, args.channels)
        return
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
