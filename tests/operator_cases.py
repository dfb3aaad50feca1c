"""A user's own operator as issue 45 found DeepRED failing through it: a 3×3 box blur then a
fixed 50 % pixel mask (bench/operator_case.py measures it; tests/test_user_operator.py holds
DeepRED to DIP on it)."""

from __future__ import annotations

import numpy as np
import torch
from skimage import data

import deeprestore


def blur_and_mask(size: int) -> tuple[deeprestore.LinearOperator, np.ndarray, torch.Tensor]:
    """(H, the clean crop (size, size, 3) in [0, 1], y (1, 3, size, size))."""
    clean = data.astronaut()[100:100 + size, 180:180 + size] / 255.0
    x = torch.from_numpy(clean).float().permute(2, 0, 1)[None]
    mask = (torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1)) > 0.5)
    kernel = torch.ones(3, 1, 3, 3) / 9

    def blur(v: torch.Tensor) -> torch.Tensor:  # symmetric kernel: its own adjoint
        return torch.nn.functional.conv2d(torch.nn.functional.pad(v, (1, 1, 1, 1),
                                                                  mode="circular"),
                                          kernel.to(v), groups=3)

    operator = deeprestore.LinearOperator.from_functions(
        lambda v: blur(v) * mask.to(v), lambda w: blur(w * mask.to(w)), name="blur-mask")
    noise = 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    return operator, clean, operator.forward(x) + noise


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (dB) of two images in [0, 1] (the estimate clipped)."""
    return float(10 * np.log10(1 / np.mean((np.clip(estimate, 0, 1) - clean) ** 2)))


def fourier_sampling(size: int) -> tuple[deeprestore.LinearOperator, np.ndarray, torch.Tensor]:
    """(H, the clean crop (size, size), y (1, 2, size, size)): 25 % of the DFT of the centre
    crop of scikit-image's camera, no noise — examples/fourier_sampling.py's case."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from fourier_sampling import fourier_operator, sampling_mask

    camera = data.camera() / 255.0
    top = (camera.shape[0] - size) // 2
    clean = camera[top:top + size, top:top + size]
    x = torch.from_numpy(clean).float()[None, None]
    operator = fourier_operator(sampling_mask(size, 0.25))
    return operator, clean, operator.forward(x)

