"""Where one network step's time goes: torch profiler table of DIP steps on the CPU.

    python bench/profile_step.py [--size 64] [--threads 1] [--steps 10] [--untuned] [--rows 15]

Builds the engine's network (SkipNet, 32 input channels) and steps it as the engine does on a
CPU: channels-last with a fused Adam, or with ``--untuned`` NCHW with Adam's default
one-parameter-at-a-time loop (the engine before 2026-12-01). After 5 warm-up steps it profiles
``--steps`` steps (forward, MSE loss, backward, Adam) and prints the milliseconds per step and
the ops with the most self CPU time, summed over the profiled steps.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from deeprestore.execution import prepare_network_step
from deeprestore.networks import SkipNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--untuned", action="store_true")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, z, optimizer = prepare_network_step(
        SkipNet(32, 3), torch.randn(1, 32, args.size, args.size) * 0.1, 0.01,
        torch.device("cpu"), cpu_tuned=not args.untuned)
    y = torch.rand(1, 3, args.size, args.size)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = ((net(z) - y) ** 2).mean()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    seconds = (time.perf_counter() - start) / args.steps
    kind = "untuned (NCHW, Adam loop)" if args.untuned else "tuned (channels-last, fused Adam)"
    print(f"{args.size}x{args.size}, {args.threads} thread(s), {kind}: "
          f"{seconds * 1e3:.1f} ms per step under the profiler ({args.steps} steps)")
    events = prof.key_averages()
    for label, match in (("Adam step", "Optimizer.step"), ("copies (aten::copy_)", "aten::copy_")):
        ms = sum(e.cpu_time_total for e in events if e.key.startswith(match)) / args.steps / 1e3
        print(f"  {label}: {ms:.1f} ms per step (profiled)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
