"""Helpers shared by engine tests: a tiny denoising problem and a scoped torch thread count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from deeprestore.metrics import psnr_rgb
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem


def tiny_denoising_problem(size: int = 16) -> Problem:
    """A (1, 3, size, size) random clean image in [0.25, 0.75] plus noise of std 0.1 (0–1
    scale), clipped; fixed seed, σ = 25 recorded (0–255 scale)."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, size, size, generator=gen) * 0.5 + 0.25
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return Problem(noisy, Identity(), noisy.clone(), 25.0, clean, psnr_rgb)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to ``count`` inside, put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
