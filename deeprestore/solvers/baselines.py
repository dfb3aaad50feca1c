"""Classical baselines computed once: a denoiser at the input's σ, Wiener, biharmonic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from deeprestore.arrays import to_array, to_tensor
from deeprestore.denoisers import Denoiser
from deeprestore.physics.operators import Blur
from deeprestore.solvers.base import Algorithm, Problem


class OneShotAlgorithm(Algorithm):
    """A classical baseline computed once: ``image = function(problem)``."""

    def __init__(
        self, problem: Problem, function: Callable[[Problem], torch.Tensor], name: str
    ) -> None:
        self.problem = problem
        self.function = function
        self.name = name
        self.total = 1
        self.result = problem.x_init

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.iteration += 1
        self.result = self.function(self.problem).clamp(0.0, 1.0)
        loss = 0.5 * torch.mean((self.problem.operator.forward(self.result) - self.problem.y) ** 2)
        return loss, None

    def estimate(self) -> torch.Tensor:
        return self.result


def denoiser_baseline(denoiser: Denoiser, sigma: float | None
                      ) -> Callable[[Problem], torch.Tensor]:
    """The one-shot method ``denoiser(y, σ)``: σ is ``sigma`` (0–255) when given, else the
    problem's."""
    def run(problem: Problem) -> torch.Tensor:
        return denoiser(problem.y, problem.sigma if sigma is None else sigma)

    return run


def wiener_deconvolution(y: torch.Tensor, kernel: np.ndarray, sigma: float) -> torch.Tensor:
    """Fourier-domain Tikhonov/Wiener deconvolution of (N, C, H, W) ``y`` (circular blur).

    ``X = conj(K) Y / (|K|² + α |L|²)`` with L the discrete Laplacian and
    ``α = max((σ/255)², 1e-6) · 100`` (σ on the 0–255 scale): a regularised inverse filter that
    only needs the blur and the noise level. Computed in float64 on ``y``'s device; the result
    has ``y``'s dtype and device.
    """
    blur = Blur(kernel)
    height, width = y.shape[-2:]
    delta = torch.zeros(1, 1, height, width, dtype=torch.float64, device=y.device)
    delta[..., 0, 0] = 1.0
    k_hat = torch.fft.fft2(blur.forward(delta))
    laplacian = torch.zeros(1, 1, height, width, dtype=torch.float64, device=y.device)
    laplacian[..., 0, 0] = 4.0
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        laplacian[..., dy % height, dx % width] -= 1.0
    l_hat = torch.fft.fft2(laplacian)
    alpha = max((sigma / 255.0) ** 2, 1e-6) * 100.0
    y_hat = torch.fft.fft2(y.to(torch.float64))
    x_hat = torch.conj(k_hat) * y_hat / (k_hat.abs() ** 2 + alpha * l_hat.abs() ** 2)
    return torch.fft.ifft2(x_hat).real.to(y.dtype)


def biharmonic_inpaint(y: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """scikit-image's biharmonic inpainting of (1, C, H, W) ``y`` where ``mask`` (H, W) is 0.

    Computed in numpy on the host (scikit-image); the result (float32) is on ``y``'s device.
    """
    from skimage.restoration import inpaint_biharmonic

    image = to_array(y)
    missing = mask < 0.5
    if image.shape[2] == 1:
        filled = inpaint_biharmonic(image[:, :, 0], missing)[:, :, None]
    else:
        filled = inpaint_biharmonic(image, missing, channel_axis=-1)
    return to_tensor(np.asarray(filled)).to(y.device)
