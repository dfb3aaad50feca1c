"""What does a second run cost? N runs one after the other vs one grouped-convolution network.

    python bench/batched.py [--size 64] [--runs 2] [--steps 20] [--rounds 5] [--device cpu]

Times a full DIP step (forward, MSE loss, backward, Adam; networks laid out as the engine lays
them out: NCHW with a fused Adam on a CPU, channels-last on CUDA) for: one SkipNet; N SkipNets
stepped one after the other (what the engine does on one thread or a GPU); one
:class:`~deeprestore.models.batched.BatchedSkipNet` holding the N runs as grouped convolutions;
and, on
the CPU, one run on one torch thread (what each of N runs side by side on N cores could do at
best), N runs side by side on N worker threads with one torch thread each (what the engine does
on a CPU with N threads) and N runs in N processes, one torch thread each.

The in-process rows are **interleaved**: each round times ``--steps`` steps of every row in turn
(the order rotates by one row per round), and a row's figure is the median over ``--rounds``
rounds of its seconds per step and of its ratio to the single run *in the same round*, so a
machine whose speed drifts (a shared VM) moves both alike. The process row runs on its own
afterwards (median of 3) and is compared with the single run's median. Issue 5's target is
N = 2 batched at ≤ 1.6× one run (64×64, this CPU).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from deeprestore.execution import configure_backends, own_thread_count, prepare_network_step
from deeprestore.models.batched import BatchedSkipNet
from deeprestore.models.skip import SkipNet


def _step_of(net: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One DIP step of ``net`` on ``z``, laid out as the engine does (its layout, its Adam)."""
    net, z, optimiser = prepare_network_step(net, z, 0.01, z.device)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = ((net(z) - y) ** 2).mean()
        loss.backward()
        optimiser.step()

    return step


def _interleaved(blocks: dict[str, Callable[[int], None]], steps: int, rounds: int,
                 device: torch.device) -> dict[str, tuple[float, float]]:
    """{row: (median seconds per step, median ratio to the first row in the same round)}.

    ``blocks[row](count)`` takes ``count`` steps. One warm-up block of 3 steps each, then
    ``rounds`` rounds; each round times every row's block once, in an order rotated by one row
    per round.
    """
    names = list(blocks)
    for name in names:
        blocks[name](3)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            blocks[name](steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append((time.perf_counter() - start) / steps)
    first = seconds[names[0]]
    return {name: (statistics.median(times),
                   statistics.median(t / f for t, f in zip(times, first, strict=True)))
            for name, times in seconds.items()}


def _block(steps: list[Callable[[], None]]) -> Callable[[int], None]:
    """``count`` rounds of every step in ``steps``, one after the other."""

    def run(count: int) -> None:
        for _ in range(count):
            for step in steps:
                step()

    return run


def _one_thread_block(step: Callable[[], None]) -> Callable[[int], None]:
    """``count`` steps on one torch thread (the thread count is put back afterwards)."""

    def run(count: int) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for _ in range(count):
                step()
        finally:
            torch.set_num_threads(threads)

    return run


def _side_by_side_block(steps: list[Callable[[], None]],
                        workers: list[ThreadPoolExecutor]) -> Callable[[int], None]:
    """``count`` iterations; in each, every step on its own worker (one torch thread each), all
    awaited before the next, as the engine's side-by-side runs."""

    def run(count: int) -> None:
        for _ in range(count):
            futures = [worker.submit(step) for worker, step in zip(workers, steps, strict=True)]
            for future in futures:
                future.result()

    return run


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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    configure_backends(device, "float32")  # cuDNN autotuning on CUDA, as the engine
    torch.manual_seed(0)
    n, size = args.runs, args.size
    nets = [SkipNet().to(device) for _ in range(n)]
    y = torch.rand(1, 3, size, size, device=device)
    zs = [torch.rand(1, 32, size, size, device=device) for _ in range(n)]
    batched_net = BatchedSkipNet.from_nets(nets).to(device)
    steps = [_step_of(net, z, y) for net, z in zip(nets, zs, strict=True)]
    blocks: dict[str, Callable[[int], None]] = {
        "one run": _block(steps[:1]),
        f"{n} runs one by one": _block(steps),
        f"{n} runs grouped convs": _block(
            [_step_of(batched_net, torch.cat(zs), y.expand(n, -1, -1, -1))]),
    }
    workers: list[ThreadPoolExecutor] = []
    if device.type == "cpu":
        workers = [ThreadPoolExecutor(max_workers=1) for _ in range(n)]
        for future in [worker.submit(own_thread_count, 1) for worker in workers]:
            future.result()
        blocks["one run, 1 thread"] = _one_thread_block(steps[0])
        blocks[f"{n} runs on {n} threads"] = _side_by_side_block(steps, workers)
    try:
        figures = _interleaved(blocks, args.steps, args.rounds, device)
    finally:
        for worker in workers:
            worker.shutdown()
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{size}×{size}, {n} runs, {args.rounds} interleaved rounds of {args.steps} steps "
          "(medians; × one run: in the same round)")
    for name, (seconds, ratio) in figures.items():
        print(f"{name:24s} {seconds:.4f} s/step  {ratio:.2f}×")
    if device.type == "cpu":
        processes = _processes(n, size, args.steps)
        one = figures["one run"][0]
        print(f"{f'{n} runs in {n} processes':24s} {processes:.4f} s/step  {processes / one:.2f}×"
              "  (run afterwards, against the median one run)")


if __name__ == "__main__":
    main()
