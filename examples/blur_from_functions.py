"""A blur given only as two functions, forward and adjoint, restored with DeepRED.

    python examples/blur_from_functions.py [--size 64] [--iterations 1000]

The blur is a circular 5×5 box filter applied in the Fourier domain: H x multiplies x's DFT by
the kernel's, Hᵀ y by its complex conjugate. ``LinearOperator.from_functions`` turns the two
into an operator, ``check_adjoint`` checks it, and DeepRED (the ``deblur`` task's preset, NLM
as f) restores the blurred, slightly noisy crop; the blurred input itself is the baseline.
"""

from __future__ import annotations

import numpy as np
import torch
from _shared import command_line, psnr, report
from skimage import data

import deeprestore


def box_blur(size: int, width: int = 5) -> deeprestore.LinearOperator:
    """Circular ``width``² box blur of (N, C, size, size) images, as two FFT functions."""
    kernel = torch.zeros(size, size)
    kernel[:width, :width] = 1.0 / width**2
    kernel = torch.roll(kernel, shifts=(-(width // 2), -(width // 2)), dims=(0, 1))
    response = torch.fft.fft2(kernel)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(x) * response).real

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(y) * response.conj()).real

    return deeprestore.LinearOperator.from_functions(forward, adjoint, name="box_blur")



def run(size: int = 64, iterations: int = 1000, sigma: float = 2.0) -> dict[str, float]:
    """Blur the centre ``size``² of scikit-image's camera, add N(0, σ²) noise (0–255 scale)
    and restore it; returns and prints the PSNRs (dB)."""
    camera = data.camera() / 255.0
    top = (camera.shape[0] - size) // 2
    clean = camera[top:top + size, top:top + size]
    x = torch.from_numpy(clean).float()[None, None]
    operator = box_blur(size)
    print(deeprestore.check_adjoint(operator, x.shape))
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, sigma / 255, x.shape)).float()
    y = operator.forward(x) + noise
    done = deeprestore.restore(y, task="deblur", method="deepred", operator=operator,
                               sigma=sigma, iterations=iterations, denoiser="nlm", seed=0)
    results = {"blurred input": psnr(y[0, 0].numpy(), clean),
               "DeepRED": psnr(done.image, clean)}
    return report(results)


if __name__ == "__main__":
    command_line(__doc__, run, size=64, iterations=1000)
