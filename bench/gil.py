"""Does a CPU denoiser release the GIL? Run it in a thread next to a pure-Python loop.

    python bench/gil.py [--size 128]

Prints, per denoiser, how far a pure-Python counting loop gets while the denoiser runs in a
background thread, relative to the same loop alone for the same time. About 1 (or more on an idle
second core) means the denoiser releases the GIL and a thread is enough for the asynchronous
mode; well below 1 means it holds the GIL.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from deeprestore.denoisers import get_denoiser


def count_for(seconds: float) -> int:
    """How many pure-Python loop turns fit in ``seconds``."""
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--denoisers", default="nlm,bm3d")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.rand(1, 3, args.size, args.size)
    for name in args.denoisers.split(","):
        denoiser = get_denoiser(name)
        start = time.perf_counter()
        denoiser(x, 5.0)
        seconds = time.perf_counter() - start
        alone = count_for(seconds)
        thread = threading.Thread(target=denoiser, args=(x, 5.0))
        thread.start()
        during = count_for(seconds)
        thread.join()
        print(f"{name}: one call {seconds:.2f} s; Python loop progress while it runs in a "
              f"thread: {during / alone:.2f} of its progress alone")


if __name__ == "__main__":
    main()
