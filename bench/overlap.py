"""Can a CPU denoiser overlap with the network's Adam steps on this machine?

    python bench/overlap.py [--size 128] [--denoiser bm3d]

Times, on one (1, 3, SIZE, SIZE) image: a network step (forward, backward, Adam) alone with all
torch threads and with one; one denoiser call alone; then the denoiser in a background worker
(a thread, then a spawned process) while the main thread keeps taking network steps with 1 or
all torch threads. If the two overlapped for free, the steps done while the call is in flight
would cost what they cost alone and the call would take what it takes alone. The last column
compares the overlapped wall time with doing the same work one after the other (ratio < 1:
overlap helps). This is what decides whether ``denoiser_mode = "async"`` can pay off on a CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import torch

from deeprestore.denoisers import get_denoiser
from deeprestore.models.skip import SkipNet

SIGMA = 25.0


def _denoise(name: str, image: np.ndarray) -> np.ndarray:
    """One denoiser call on an (H, W, C) float32 image in [0, 1], σ = 25 on the 0–255 scale."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    return get_denoiser(name)(tensor, SIGMA).numpy()


def _network_step(size: int) -> Callable[[], None]:
    torch.manual_seed(0)
    net = SkipNet(32, 3)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    z = torch.rand(1, 32, size, size)
    y = torch.rand(1, 3, size, size)

    def step() -> None:
        optimiser.zero_grad()
        loss = ((net(z) - y) ** 2).mean()
        loss.backward()
        optimiser.step()

    return step


def _mean_time(step: Callable[[], None], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--denoiser", default="bm3d")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    step = _network_step(args.size)
    image = np.random.default_rng(0).random((args.size, args.size, 3)).astype(np.float32)
    for _ in range(3):
        step()
    alone = {threads: _mean_time(step, 5)}
    torch.set_num_threads(1)
    alone[1] = _mean_time(step, 5)
    torch.set_num_threads(threads)
    _denoise(args.denoiser, image)  # the first call pays one-off set-up
    start = time.perf_counter()
    _denoise(args.denoiser, image)
    call_alone = time.perf_counter() - start
    print(f"network step alone: {alone[threads]:.3f} s ({threads} threads), {alone[1]:.3f} s (1)")
    print(f"{args.denoiser} call alone: {call_alone:.3f} s")
    workers: dict[str, Executor] = {
        "thread": ThreadPoolExecutor(max_workers=1),
        "process": ProcessPoolExecutor(max_workers=1,
                                       mp_context=multiprocessing.get_context("spawn")),
    }
    print("worker   torch threads  steps  wall s  s/step  vs one-after-the-other")
    for kind, worker in workers.items():
        worker.submit(_denoise, args.denoiser, image).result()  # warm the worker
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            start = time.perf_counter()
            future = worker.submit(_denoise, args.denoiser, image)
            steps = 0
            while not future.done():
                step()
                steps += 1
            future.result()
            wall = time.perf_counter() - start
            sequential = call_alone + steps * alone[threads]
            print(f"{kind:8s} {count:13d}  {steps:5d}  {wall:6.2f}  {wall / steps:6.3f}  "
                  f"{wall / sequential:.2f}")
        worker.shutdown()
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
