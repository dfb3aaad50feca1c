"""What does a second run cost? N runs one after the other vs one grouped-convolution network.

    python bench/batched.py [--size 64] [--runs 2] [--steps 20] [--device cpu]

Times a full DIP step (forward, MSE loss, backward, Adam; networks laid out as the engine lays
them out: channels-last, fused Adam on a CPU, since 2026-12-01) for: one SkipNet; N SkipNets stepped
one after the other (what the engine does on one thread or a GPU); one
:class:`~deeprestore.batched.BatchedSkipNet` holding the N runs as grouped convolutions; and, on
the CPU, one run on one torch thread (what each of N runs side by side on N cores could do at
best), N runs on N Python threads (what the engine does on a CPU with N threads) and N runs in
N processes, one torch thread each. Prints
seconds per step and each one relative to the single run (all threads), measured in the same
invocation. Issue 5's target is N = 2 batched at ≤ 1.6× one run
(64×64, this CPU).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable

import torch

from deeprestore.batched import BatchedSkipNet
from deeprestore.engine import configure_backends, prepare_network_step
from deeprestore.networks import SkipNet


def _step_of(net: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One DIP step of ``net`` on ``z``, laid out as the engine does (channels-last, its Adam)."""
    net, z, optimiser = prepare_network_step(net, z, 0.01, z.device)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = ((net(z) - y) ** 2).mean()
        loss.backward()
        optimiser.step()

    return step


def _seconds_per_step(steps: list[Callable[[], None]], count: int, device: torch.device) -> float:
    """Median over 3 repeats of the time of ``count`` rounds (each round calls every step once)."""
    for _ in range(3):
        for step in steps:
            step()
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            for step in steps:
                step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times)


def _process_run(seed: int, size: int, steps: int, barrier: object) -> float:
    """One run in its own process on one torch thread: seconds per step after warm-up."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    step = _step_of(SkipNet(), torch.rand(1, 32, size, size), torch.rand(1, 3, size, size))
    for _ in range(3):
        step()
    barrier.wait()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _processes(n: int, size: int, steps: int) -> float:
    """N runs in N spawned processes at once: the slowest one's seconds per step (median of 3)."""
    context = multiprocessing.get_context("spawn")
    times = []
    for _ in range(3):
        with context.Manager() as manager, context.Pool(n) as pool:
            barrier = manager.Barrier(n)
            times.append(max(pool.starmap(_process_run,
                                          [(r, size, steps, barrier) for r in range(n)])))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    configure_backends(device, "float32")  # cuDNN autotuning on CUDA, as the engine
    torch.manual_seed(0)
    n, size = args.runs, args.size
    nets = [SkipNet().to(device) for _ in range(n)]
    y = torch.rand(1, 3, size, size, device=device)
    zs = [torch.rand(1, 32, size, size, device=device) for _ in range(n)]
    one = _seconds_per_step([_step_of(nets[0], zs[0], y)], args.steps, device)
    sequential = _seconds_per_step([_step_of(net, z, y) for net, z in zip(nets, zs, strict=True)],
                                   args.steps, device)
    batched_net = BatchedSkipNet.from_nets(nets).to(device)
    batched = _seconds_per_step(
        [_step_of(batched_net, torch.cat(zs), y.expand(n, -1, -1, -1))], args.steps, device)
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{size}×{size}, {n} runs, median of 3 × {args.steps} steps")
    print(f"{'one run':24s} {one:.4f} s/step  1.00×")
    print(f"{f'{n} runs one by one':24s} {sequential:.4f} s/step  {sequential / one:.2f}×")
    print(f"{f'{n} runs grouped convs':24s} {batched:.4f} s/step  {batched / one:.2f}×")
    if device.type != "cpu":
        return
    threads = torch.get_num_threads()
    steps = [_step_of(net, z, y) for net, z in zip(nets, zs, strict=True)]

    def side_by_side() -> None:
        workers = [threading.Thread(target=step) for step in steps[1:]]
        for worker in workers:
            worker.start()
        steps[0]()
        for worker in workers:
            worker.join()

    torch.set_num_threads(1)
    try:
        one_thread = _seconds_per_step(steps[:1], args.steps, device)
        parallel = _seconds_per_step([side_by_side], args.steps, device)
    finally:
        torch.set_num_threads(threads)
    print(f"{'one run, 1 thread':24s} {one_thread:.4f} s/step  {one_thread / one:.2f}×")
    print(f"{f'{n} runs on {n} threads':24s} {parallel:.4f} s/step  {parallel / one:.2f}×")
    processes = _processes(n, size, args.steps)
    print(f"{f'{n} runs in {n} processes':24s} {processes:.4f} s/step  {processes / one:.2f}×")


if __name__ == "__main__":
    main()
