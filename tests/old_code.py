"""Code that once had a device bug, kept as it was so that the device checks can show they
catch it (tests/test_device_clean.py runs it, tests/test_tensor_factories.py scans its source)."""

from __future__ import annotations

import numpy as np
import torch

from deeprestore.physics.operators import Blur


def wiener_deconvolution(y: torch.Tensor, kernel: np.ndarray, sigma: float) -> torch.Tensor:
    """``deeprestore.solvers.baselines.wiener_deconvolution`` before issue 32: ``delta`` and
    ``laplacian`` made on the CPU whatever ``y``'s device."""
    blur = Blur(kernel)
    height, width = y.shape[-2:]
    delta = torch.zeros(1, 1, height, width, dtype=torch.float64)
    delta[..., 0, 0] = 1.0
    k_hat = torch.fft.fft2(blur.forward(delta))
    laplacian = torch.zeros(1, 1, height, width, dtype=torch.float64)
    laplacian[..., 0, 0] = 4.0
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        laplacian[..., dy % height, dx % width] -= 1.0
    l_hat = torch.fft.fft2(laplacian)
    alpha = max((sigma / 255.0) ** 2, 1e-6) * 100.0
    y_hat = torch.fft.fft2(y.to(torch.float64))
    x_hat = torch.conj(k_hat) * y_hat / (k_hat.abs() ** 2 + alpha * l_hat.abs() ** 2)
    return torch.fft.ifft2(x_hat).real.to(y.dtype)
