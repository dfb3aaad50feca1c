"""Image quality measures, following the paper's PSNR protocol (REFERENCE.md §5).

PSNR functions run in torch on whatever device the images live, so the engine can measure
without a host round trip. Images are (N, C, H, W) float tensors in [0, 1].

- ``rgb``: PSNR over all channels, data range 1, no quantisation, no border crop (denoising,
  inpainting).
- ``y``: both images quantised to 8 bits, then luminance
  ``Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)`` with R, G, B in 0–255, PSNR with
  peak 255, no border crop (deblurring, super-resolution). One-channel images are their own Y.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

PROTOCOLS = ("rgb", "y")
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on the [0, 1] scale (inf for 0)."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def psnr_rgb(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB over all pixels and channels, data range 1 (a 0-d tensor on x's device)."""
    mse = torch.mean((x.float() - reference.float()) ** 2)
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def luminance_y(x: torch.Tensor) -> torch.Tensor:
    """8-bit luminance (N, 1, H, W) with values 16–235, from (N, 3, H, W) in [0, 1].

    Both quantisations of the protocol happen here: the RGB image is rounded to 8 bits first and
    Y is rounded to an integer. For 1-channel input, the 8-bit quantised channel itself is Y.
    """
    rgb8 = torch.round(x.float().clamp(0, 1) * 255.0)
    if x.shape[1] == 1:
        return rgb8
    if x.shape[1] != 3:
        raise ValueError(f"Y-channel PSNR needs 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(_Y_WEIGHTS, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.round((rgb8 * w).sum(dim=1, keepdim=True) / 255.0 + 16.0)


def psnr_y(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of the 8-bit luminance channel, peak 255 (a 0-d tensor on x's device)."""
    mse = torch.mean((luminance_y(x) - luminance_y(reference)) ** 2)
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-20))


def psnr_function(protocol: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The PSNR function of ``protocol`` ("rgb" or "y")."""
    if protocol == "rgb":
        return psnr_rgb
    if protocol == "y":
        return psnr_y
    raise ValueError(f"unknown PSNR protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def ssim(x: torch.Tensor, reference: torch.Tensor, protocol: str = "rgb") -> float:
    """SSIM (scikit-image, data range 1) of the first image of each batch.

    With ``protocol="y"`` it is computed on the 8-bit luminance (scaled to [0, 1]); otherwise
    over the colour channels (``channel_axis`` = channels).
    """
    from skimage.metrics import structural_similarity

    if protocol == "y":
        a = (luminance_y(x)[0, 0] / 255.0).cpu().numpy().astype(np.float64)
        b = (luminance_y(reference)[0, 0] / 255.0).cpu().numpy().astype(np.float64)
        return float(structural_similarity(a, b, data_range=1.0))
    a = x[0].detach().float().cpu().numpy().astype(np.float64)
    b = reference[0].detach().float().cpu().numpy().astype(np.float64)
    if a.shape[0] == 1:
        return float(structural_similarity(a[0], b[0], data_range=1.0))
    small = min(a.shape[1:])
    win = min(7, small if small % 2 else small - 1)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=win))
