"""An MRI-like problem: a grey image seen through a quarter of its 2-D Fourier coefficients.

    python examples/fourier_sampling.py [--size 64] [--fraction 0.25] [--iterations 2000]

H keeps a random ``fraction`` of the orthonormal 2-D DFT coefficients of x (the lowest
frequencies always, the rest drawn at random) and returns their real and imaginary parts as two
channels: y = H x has shape (1, 2, size, size) for x of shape (1, 1, size, size). Its adjoint
puts y's coefficients back and takes the real part of the inverse DFT, so the zero-filled
inverse Hᵀy is the simplest reconstruction. DIP and DeepRED restore x through H with the
``superres`` task's presets (noiseless measurements, H ≠ I) and NLM as DeepRED's f; each line
prints the PSNR against the clean image.
"""

from __future__ import annotations

import numpy as np
import torch
from _shared import command_line, psnr, report
from skimage import data

import deeprestore


def sampling_mask(size: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """(size, size) booleans in the DFT's layout: the lowest frequencies (|k| ≤ size/16 in
    both directions) and random others, ``fraction`` of all in total."""
    frequencies = np.abs(np.fft.fftfreq(size) * size)
    low = (frequencies[:, None] <= size / 16) & (frequencies[None, :] <= size / 16)
    rng = np.random.default_rng(seed)
    extra = max(int(fraction * size * size) - int(low.sum()), 0)
    others = np.flatnonzero(~low.ravel())
    chosen = low.ravel().copy()
    chosen[rng.choice(others, size=extra, replace=False)] = True
    return torch.from_numpy(chosen.reshape(size, size))


def fourier_operator(mask: torch.Tensor) -> deeprestore.LinearOperator:
    """H: x (N, 1, H, W) → the kept coefficients' real and imaginary parts (N, 2, H, W)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        coefficients = torch.fft.fft2(x, norm="ortho") * mask
        return torch.cat([coefficients.real, coefficients.imag], dim=1)

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        coefficients = torch.complex(y[:, :1], y[:, 1:]) * mask
        return torch.fft.ifft2(coefficients, norm="ortho").real

    return deeprestore.LinearOperator.from_functions(forward, adjoint, name="fourier_sampling")



def run(size: int = 64, fraction: float = 0.25, iterations: int = 2000) -> dict[str, float]:
    """Restore the centre ``size``² of scikit-image's camera from ``fraction`` of its DFT;
    returns and prints each method's PSNR (dB)."""
    camera = data.camera() / 255.0
    top = (camera.shape[0] - size) // 2
    clean = camera[top:top + size, top:top + size]
    x = torch.from_numpy(clean).float()[None, None]
    operator = fourier_operator(sampling_mask(size, fraction))
    print(deeprestore.check_adjoint(operator, x.shape))
    y = operator.forward(x)
    zero_filled = operator.adjoint(y)[0, 0].numpy()
    results = {"zero-filled Hᵀy": psnr(zero_filled, clean)}
    for method in ("dip", "deepred"):
        done = deeprestore.restore(y, task="superres", method=method, operator=operator,
                                   shape=x.shape, iterations=iterations, denoiser="nlm",
                                   sigma_f=5.0, seed=0)
        results[method] = psnr(done.image, clean)
    return report(results)


if __name__ == "__main__":
    command_line(__doc__, run, size=64, fraction=0.25, iterations=2000)
