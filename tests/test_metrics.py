"""deeprestore.metrics: the paper's quantised luminance Y, the Y and RGB PSNR protocols, and
PSNR from an MSE."""

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr

from deeprestore.metrics import luminance_y, psnr_of_mse, psnr_rgb, psnr_y


def test_luminance_matches_scikit_image_and_the_papers_formula():
    rng = np.random.default_rng(1)
    rgb8 = rng.integers(0, 256, (9, 7, 3)).astype(np.float64)
    ours = luminance_y(torch.from_numpy(rgb8.transpose(2, 0, 1))[None] / 255.0)[0, 0].numpy()
    formula = np.round((65.481 * rgb8[..., 0] + 128.553 * rgb8[..., 1]
                        + 24.966 * rgb8[..., 2]) / 255.0 + 16.0)
    assert np.array_equal(ours, formula)
    assert np.array_equal(ours, np.round(rgb2ycbcr(rgb8 / 255.0)[..., 0]))


def test_y_psnr_quantises_and_differs_from_rgb_psnr():
    g = torch.Generator().manual_seed(0)
    a = torch.round(torch.rand(1, 3, 16, 16, generator=g) * 200 + 20) / 255
    b = a + 0.001  # a quarter of an 8-bit step: RGB PSNR sees it, quantised Y does not
    assert psnr_rgb(a, b).item() == pytest.approx(60.0, abs=0.01)
    assert psnr_y(a, b).item() > 150
    c = (a + 0.05).clamp(0, 1)
    expected = 10 * np.log10(255**2 / torch.mean((luminance_y(a) - luminance_y(c)) ** 2).item())
    assert psnr_y(a, c).item() == pytest.approx(expected, rel=1e-6)


def test_psnr_of_mse() -> None:
    assert psnr_of_mse(0.01) == pytest.approx(20.0)
    assert psnr_of_mse(0.0) == math.inf
