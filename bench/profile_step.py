"""Where one network step's time goes: torch's profiler over a few DIP steps of the real engine.

    python bench/profile_step.py [--size 256] [--precision bf16] [--steps 5] [--top 15]
                                 [--channels 128] [--layout auto|nchw|channels-last]
                                 [--device cuda] [--method dip] [--step-graph eager]
                                 [--warmup 2]
    python bench/profile_step.py --ablation [--size 256] [--steps 8] [--channels 128]

Builds the ``bench/speed.py`` problem (astronaut, σ 25) and a DIP algorithm through
:func:`deeprestore.solvers.factory.make_algorithm` (so the step is the engine's own: forward,
loss, backward, fused Adam, EMA), warms it up for two steps, then profiles ``--steps`` steps
and prints the operators with the most self CPU time (a Markdown table: op, calls per step,
ms per step, share). On CUDA also the kernels with the most device time, and the host gaps:
wall time per step minus the device's busy time (issue 42's "how much of the step waits for the
host"); ``--step-graph cuda-graph`` profiles the replayed graph.
``--layout``: the CPU network's memory layout (``auto``: what the engine
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
from deeprestore.execution import Execution, configure_backends
from deeprestore.solvers.base import Algorithm, problem_to_device
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
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (not --ablation)")
    parser.add_argument("--method", default="dip", help="dip, dip-tv or deepred")
    parser.add_argument("--step-graph", default="eager", help="Execution.step_graph")
    parser.add_argument("--warmup", type=int, default=2, help="steps before profiling")
    args = parser.parse_args()
    if args.ablation:
        ablation(args.size, args.steps, args.channels)
        return
    device = torch.device(args.device)
    problem = make_problem(args.size)
    settings = Settings(method=args.method, iterations=args.steps + args.warmup + 2,
                        precision=args.precision, net_channels=args.channels)
    execution = Execution(cpu_channels_last=LAYOUTS[args.layout], step_graph=args.step_graph)
    configure_backends(device, args.precision)
    algorithm = make_algorithm(problem_to_device(problem, device), settings, device,
                               execution=execution)
    for _ in range(args.warmup):  # cuDNN's autotuning, a graph's capture
        algorithm.update()
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            algorithm.update()
        if cuda:
            torch.cuda.synchronize(device)
    wall = (time.perf_counter() - tic) / args.steps
    algorithm.close()
    events = list(prof.key_averages())
    print(f"{args.method} {args.size}², {args.precision}, step graph {args.step_graph}, "
          f"layout {args.layout}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{device}: {wall * 1e3:.2f} ms wall per step (profiled)")
    _table(events, "self_cpu_time_total", "self CPU", args.steps, args.top)
    if cuda:
        busy = sum(e.self_device_time_total for e in events) / args.steps / 1e3
        print(f"\ndevice busy {busy:.2f} ms per step; host gaps (wall - busy) "
              f"{wall * 1e3 - busy:.2f} ms ({100 * (1 - busy / (wall * 1e3)):.0f} % idle)")
        _table(events, "self_device_time_total", "self device", args.steps, args.top)


def _table(events: list, key: str, label: str, steps: int, top: int) -> None:
    """A Markdown table of the ``top`` events by ``key`` (a profiler time, µs)."""
    ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in ranked) or 1.0
    print(f"\n{label} time: {total / steps / 1e3:.2f} ms per step")
    print("| op | calls / step | ms / step | share |")
    print("|---|---:|---:|---:|")
    for event in ranked[:top]:
        value = getattr(event, key)
        print(f"| `{event.key}` | {event.count / steps:g} | {value / steps / 1e3:.2f} | "
              f"{100 * value / total:.1f} % |")

if __name__ == "__main__":
    main()
