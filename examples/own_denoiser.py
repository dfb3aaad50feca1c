"""A denoiser of one's own, a torch module, as DeepRED's f on the denoising task.

    python examples/own_denoiser.py [--size 64] [--sigma 25] [--iterations 1000]

``GaussianFilterBank`` is a small fixed filter bank: three Gaussian filters (std 0.5, 1 and 2
px) mixed by the noise level σ (0–255 scale) — honest, simple, no training. It is a
``torch.nn.Module`` with a parameter (the mixing logits), which DeepRED calls under
``torch.no_grad()``: its parameter is never trained. The example prints the PSNR of the module
alone on the noisy crop and of DeepRED with it as f.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from _shared import command_line, psnr, report
from skimage import data

import deeprestore

STDS = (0.5, 1.0, 2.0)


def gaussian_taps(std: float, radius: int = 4) -> torch.Tensor:
    """A normalised 1-D Gaussian of ``std`` px, 2·radius + 1 taps."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (offsets / std) ** 2)
    return taps / taps.sum()


class GaussianFilterBank(torch.nn.Module):
    """f(x, σ): a mix of Gaussian smoothings of x (N, C, H, W) in [0, 1], the wider ones
    weighed more at larger σ (0–255 scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("taps", torch.stack([gaussian_taps(s) for s in STDS]))
        self.logits = torch.nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        channels, radius = x.shape[1], self.taps.shape[1] // 2
        padded = F.pad(x, (radius,) * 4, mode="reflect")
        smoothed = []
        for taps in self.taps.to(x.device):
            rows = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
            cols = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
            blurred = F.conv2d(F.conv2d(padded, rows, groups=channels), cols, groups=channels)
            smoothed.append(blurred)
        level = torch.tensor([0.0, sigma / 25.0, 2 * sigma / 25.0], device=x.device)
        weights = torch.softmax(self.logits.to(x.device) + level, dim=0)
        return sum(w * s for w, s in zip(weights, smoothed, strict=True))



def run(size: int = 64, sigma: float = 25.0, iterations: int = 1000) -> dict[str, float]:
    """Denoise the centre ``size``² of scikit-image's astronaut (σ on the 0–255 scale) with
    the module alone and with DeepRED using it; returns and prints the PSNRs (dB)."""
    astronaut = data.astronaut() / 255.0
    top = (astronaut.shape[0] - size) // 2
    clean = astronaut[top:top + size, top:top + size]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, sigma / 255, clean.shape), 0, 1)
    module = GaussianFilterBank()
    tensor = torch.from_numpy(noisy.transpose(2, 0, 1).copy()).float()[None]
    with torch.no_grad():
        alone = module(tensor, sigma)[0].permute(1, 2, 0).numpy()
    done = deeprestore.restore(noisy, task="denoise", method="deepred", denoiser=module,
                               sigma=sigma, iterations=iterations, seed=0)
    assert module.logits.grad is None  # never trained
    results = {"noisy input": psnr(noisy, clean), "the module alone": psnr(alone, clean),
               "DeepRED with it as f": psnr(done.image, clean)}
    return report(results)


if __name__ == "__main__":
    command_line(__doc__, run, size=64, sigma=25.0, iterations=1000)
