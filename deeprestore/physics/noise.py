"""Estimate the Gaussian noise level of an image from the image alone (``--sigma auto``).

Two steps, measured against scikit-image's wavelet estimator (``estimate_sigma``) on the shared
cbm3d9 images (docs/tasks.md, "Estimated σ"):

1. **Patch PCA** (Chen, Zhu & Heng, "An efficient statistical method for image noise level
   estimation", ICCV 2015): the covariance of the image's r×r×C patches has, in the directions
   the image content leaves alone, eigenvalues equal to the noise variance. The noise variance
   is the mean of the largest set of smallest eigenvalues whose mean does not exceed its median.
   Texture (baboon) fools it far less than the wavelet estimator's finest band.
2. **Clipping**: an 8-bit image clips the noise at 0 and 1, which lowers the variance seen near
   black and white (−10…−19 % at σ = 50 with the wavelet estimator). The patch estimate is the
   mean variance of the clipped noise; it is inverted, by bisection, through the clipped-Gaussian
   variance at each pixel's clean intensity: a Gaussian blur of the image, itself corrected for
   the pull of the clipping on the mean.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

#: Patch side of the PCA step (pixels); smaller images use 5 or 3.
PATCH = 7
#: Smallest image side the estimator accepts.
MIN_SIDE = 8
#: At most this many patches enter the covariance (a random subset of a large image's).
MAX_PATCHES = 40_000
#: Blur (pixels) that gives each pixel's local mean for the clipping model.
LOCAL_MEAN_BLUR = 3.0
#: At most this many local means enter the clipping model.
MAX_MEANS = 100_000


def patch_noise_std(pixels: np.ndarray, patch: int = PATCH, max_patches: int = MAX_PATCHES,
                    seed: int = 0) -> float:
    """Noise std (same scale as ``pixels``) from the eigenvalues of the patch covariance.

    ``pixels``: (H, W, C) float array; each patch is an r×r×C vector. Clipping is not
    accounted for (:func:`estimate_noise_sigma` does that).
    """
    patches = sliding_window_view(pixels, (patch, patch), axis=(0, 1))  # a view, no copy
    rows, cols = patches.shape[:2]
    count = rows * cols
    if count > max_patches:  # only the chosen patches are copied (a photo has millions)
        chosen = np.random.default_rng(seed).choice(count, max_patches, replace=False)
        picked = patches[chosen // cols, chosen % cols]
    else:
        picked = patches.reshape(count, *patches.shape[2:])
    vectors = picked.reshape(len(picked), -1)
    eigenvalues = np.linalg.eigvalsh(np.cov(vectors, rowvar=False))  # ascending
    for size in range(len(eigenvalues), 0, -1):
        tail = eigenvalues[:size]
        if tail.mean() <= np.median(tail):
            return float(np.sqrt(max(tail.mean(), 0.0)))
    return float(np.sqrt(max(eigenvalues[0], 0.0)))


def _patch_side(shape: tuple[int, ...]) -> int:
    """The largest patch side (7, 5 or 3) with at least 4 patches per covariance dimension, so
    that small images still give a full-rank covariance."""
    height, width, channels = shape
    for side in (PATCH, 5, 3):
        if (height - side + 1) * (width - side + 1) >= 4 * channels * side * side:
            return side
    return 3


def _clipped_moments(mean: np.ndarray, std: float) -> tuple[np.ndarray, np.ndarray]:
    """E[Y] and E[Y²] of ``Y = clip(mean + std·Z, 0, 1)``, Z ~ N(0, 1), elementwise."""
    a, b = -mean / std, (1.0 - mean) / std
    cdf_a, cdf_b = ndtr(a), ndtr(b)
    pdf_a = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    pdf_b = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    inside = cdf_b - cdf_a
    first = mean * inside + std * (pdf_a - pdf_b) + (1.0 - cdf_b)
    second = ((mean**2 + std**2) * inside + 2 * mean * std * (pdf_a - pdf_b)
              + std**2 * (a * pdf_a - b * pdf_b) + (1.0 - cdf_b))
    return first, second


def clipped_variance(mean: np.ndarray, std: float) -> np.ndarray:
    """Variance of ``clip(mean + std·Z, 0, 1)`` for Z ~ N(0, 1), elementwise over ``mean``."""
    first, second = _clipped_moments(mean, std)
    return np.maximum(second - first**2, 0.0)


def clipped_mean(mean: np.ndarray, std: float) -> np.ndarray:
    """Mean of ``clip(mean + std·Z, 0, 1)`` for Z ~ N(0, 1), elementwise over ``mean``."""
    return _clipped_moments(mean, std)[0]


def _clean_means(observed_means: np.ndarray, std: float) -> np.ndarray:
    """The clean intensities whose clipped noisy versions have ``observed_means`` (clipping
    pulls the mean of a dark or bright region towards the middle)."""
    grid = np.linspace(0.0, 1.0, 513)
    return np.interp(observed_means, clipped_mean(grid, std), grid)


def estimate_noise_sigma(pixels: np.ndarray) -> float:
    """Std of the additive Gaussian noise of an image, on the **0–255 scale**.

    Parameters
    ----------
    pixels : ndarray
        (H, W, C) or (H, W) float array in [0, 1] (the noisy image, clipped to [0, 1] as an
        8- or 16-bit file is). Each side needs at least ``MIN_SIDE`` (8) pixels.

    Returns
    -------
    float
        The estimated σ (0 for a noise-free flat image).
    """
    image = np.asarray(pixels, dtype=np.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"the image is too small to estimate its noise ({image.shape[1]}×"
                         f"{image.shape[0]}; each side needs at least {MIN_SIDE} pixels)")
    observed = patch_noise_std(image, _patch_side(image.shape))
    if observed <= 0:
        return 0.0
    local_mean = np.clip(gaussian_filter(image, (LOCAL_MEAN_BLUR, LOCAL_MEAN_BLUR, 0)), 0, 1)
    local_mean = local_mean.ravel()
    if local_mean.size > MAX_MEANS:  # the bisection needs the distribution, not every pixel
        local_mean = np.random.default_rng(0).choice(local_mean, MAX_MEANS, replace=False)
    low, high = observed, 3.0 * observed + 1e-3
    for _ in range(40):
        middle = 0.5 * (low + high)
        if np.sqrt(clipped_variance(_clean_means(local_mean, middle), middle).mean()) < observed:
            low = middle
        else:
            high = middle
    return float(0.5 * (low + high) * 255.0)
