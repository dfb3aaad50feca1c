"""The super-resolution operator H: two separable matrix products vs a depthwise convolution.

    python bench/downsample.py [--sizes 128,256,512] [--factor 4] [--threads 2] [--repeats 5]

``deeprestore.physics.operators.Downsample`` applies DIP's Lanczos-2 downsampler as ``M_h x M_wᵀ``
(the kernel is separable; replicate padding folded into the matrices). Before 2026-12-01 it was a
replicate-padded depthwise 16×16 (×4) convolution with stride f, which torch's CPU kernels run
slowly. For each size and memory layout (NCHW, and channels-last, the network output's layout
on a CPU) this times forward + backward (what a DIP/DeepRED step does with H) of both forms,
interleaved round by round, checks they agree, and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from deeprestore.physics.operators import Downsample


def conv_forward(op: Downsample, x: torch.Tensor) -> torch.Tensor:
    """The former formulation: replicate pad by gathering, depthwise conv, stride f."""
    h, w = x.shape[-2:]
    rows = torch.arange(-op.pad, h + op.pad).clamp(0, h - 1)
    cols = torch.arange(-op.pad, w + op.pad).clamp(0, w - 1)
    padded = x.index_select(-2, rows).index_select(-1, cols)
    kernel = torch.from_numpy(op.kernel).to(x.dtype)
    weight = kernel.expand(x.shape[1], 1, *kernel.shape).contiguous()
    return F.conv2d(padded, weight, stride=op.factor, groups=x.shape[1])


def step_seconds(forward, x0: torch.Tensor, count: int) -> float:
    """Median seconds of forward + backward of ``sum(H x ** 2)``."""
    samples = []
    for _ in range(count):
        x = x0.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        forward(x).pow(2).sum().backward()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each times both forms)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per form and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    op = Downsample(args.factor)
    print(f"Downsample x{args.factor}, torch {torch.__version__}, {args.threads} threads; "
          "forward + backward, ms (median of rounds)\n")
    print("| size | layout | depthwise conv | matrices | ratio (matrices / conv) |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        base = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        for layout in ("NCHW", "channels-last"):
            x0 = (base.contiguous(memory_format=torch.channels_last)
                  if layout == "channels-last" else base)
            gap = (op.forward(x0) - conv_forward(op, x0)).abs().max().item()
            if gap > 1e-5:
                raise SystemExit(f"the two forms differ by {gap} at {size} px")
            conv, matrices = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                conv.append(step_seconds(lambda x: conv_forward(op, x), x0, args.steps))
                matrices.append(step_seconds(op.forward, x0, args.steps))
            c, m = statistics.median(conv), statistics.median(matrices)
            print(f"| {size} | {layout} | {c * 1e3:.2f} | {m * 1e3:.2f} | {m / c:.3f} |")


if __name__ == "__main__":
    main()
