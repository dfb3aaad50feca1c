"""Estimate the Gaussian noise level of an image from the image alone (``--sigma auto``).

Uncompressed images (PNG, TIFF, …): two steps, measured against scikit-image's wavelet
estimator (``estimate_sigma``) on the shared cbm3d9 images (docs/notes/sigma-estimator.md):

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

JPEG-compressed images: compression zeroes the high frequencies of smooth 8×8 blocks, so the
smallest patch eigenvalues see no noise and the patch estimate reads ≈ 1 whatever the noise.
What is wanted there is the noise the file still holds, ``std(decoded − clean)``:
:func:`compressed_noise_std` reads it from the finest Haar detail bands of the luma channel,
horizontal and vertical taken apart and the smaller kept. JPEG quantises first the frequencies
high in both directions (the diagonal band, scikit-image's ``estimate_sigma``'s), and keeps
(high, low) ones; after 4:2:0 chroma subsampling the fine-scale RGB noise is the luma noise
alone; texture inflates one direction more than the other. Whether a file was compressed comes
from its format (the caller's ``compressed``) or, when unknown, from the pixels
(:func:`looks_compressed`: a decoded 4:2:0 JPEG has almost no fine-scale chroma; 8×8
blockiness does not separate — noise swamps the block edges). Measured in
docs/notes/jpeg-noise.md (``python bench/sigma.py --jpeg``).
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


#: Below this :func:`chroma_subsampling_score` an RGB image is taken for a decoded 4:2:0 JPEG
#: (measured: decoded JPEGs ≤ 0.16, noisy never-compressed crops ≥ 0.65)
CHROMA_THRESHOLD = 0.35
#: Large images are sampled: at most this many tiles of ``TILE`` px, on the 8-pixel JPEG grid
TILE = 128
MAX_TILES = 64
_MAD_TO_STD = 1.0 / 0.6745


def _luma_chroma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """JPEG's (JFIF) Y, Cb, Cr of an (H, W, 3) image, on its scale, chroma without offset."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b,
            0.5 * r - 0.418688 * g - 0.081312 * b)


def _tiles(image: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The image itself when small, else up to :data:`MAX_TILES` random :data:`TILE`-px crops
    whose corners lie on the 8-pixel grid (JPEG's blocks and the Haar pairs stay aligned)."""
    height, width = image.shape[:2]
    rows, cols = (height - TILE) // 8 + 1, (width - TILE) // 8 + 1
    if height * width <= MAX_TILES * TILE * TILE or rows < 1 or cols < 1:
        return [image]
    picks = np.random.default_rng(seed).choice(rows * cols, min(MAX_TILES, rows * cols),
                                               replace=False)
    return [image[8 * (k // cols):8 * (k // cols) + TILE, 8 * (k % cols):8 * (k % cols) + TILE]
            for k in picks]


def haar_details(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The finest orthonormal Haar detail bands (horizontal, vertical, diagonal) of a 2-D
    array, one coefficient per 2×2 block; white noise of std s gives each band std s."""
    height, width = channel.shape
    c = channel[:height - height % 2, :width - width % 2]
    a, b, d, e = c[0::2, 0::2], c[0::2, 1::2], c[1::2, 0::2], c[1::2, 1::2]
    return (a + b - d - e) / 2, (a - b + d - e) / 2, (a - b - d + e) / 2


def _mad_std(bands: list[np.ndarray]) -> float:
    return float(np.median(np.abs(np.concatenate([band.ravel() for band in bands])))
                 * _MAD_TO_STD)


def compressed_noise_std(pixels: np.ndarray) -> float:
    """The noise a JPEG-compressed image still holds, ``std(decoded − clean)`` estimated, on
    ``pixels``' scale: for each channel the robust (median absolute) std of its finest
    horizontal and of its finest vertical Haar band, the smaller of the two, then the root
    mean square over the channels. After 4:2:0 subsampling the chroma is smooth and every
    channel's fine scale holds the luma's noise; a 4:4:4 file keeps its chroma noise at full
    resolution, which the luma alone read a third low (σ 25: 16 for 22–24 held; issue 43).
    ``pixels``: (H, W, C) float; large images are sampled in tiles."""
    variance = 0.0
    tiles = _tiles(pixels)
    for channel in range(pixels.shape[2]):
        horizontal, vertical = [], []
        for tile in tiles:
            h_band, v_band, _ = haar_details(tile[..., channel])
            horizontal.append(h_band)
            vertical.append(v_band)
        variance += min(_mad_std(horizontal), _mad_std(vertical)) ** 2
    return float(np.sqrt(variance / pixels.shape[2]))


def chroma_subsampling_score(pixels: np.ndarray) -> float:
    """The fine-scale chroma of an (H, W, 3) image relative to its luma: the median absolute
    finest diagonal Haar coefficient of Cb and Cr over that of Y, the largest over the four
    2×2 grid phases. ≈ 0.9 for white RGB noise; ≈ 0.05–0.16 for a decoded 4:2:0 JPEG, whose
    chroma was stored at half resolution (also a noise-free photo's smooth chroma scores low)."""
    tiles = _tiles(pixels)
    best = 0.0
    for dy, dx in ((0, 0), (1, 1), (0, 1), (1, 0)):
        lumas, chromas = [], []
        for tile in tiles:
            luma, blue, red = _luma_chroma(tile[dy:, dx:])
            lumas.append(haar_details(luma)[2])
            chromas += [haar_details(blue)[2], haar_details(red)[2]]
        luma_std = _mad_std(lumas)
        if luma_std > 0:
            best = max(best, _mad_std(chromas) / luma_std)
    return best


def looks_compressed(pixels: np.ndarray) -> bool:
    """Whether an image looks like a decoded 4:2:0 JPEG (:func:`chroma_subsampling_score` below
    :data:`CHROMA_THRESHOLD`); False for grey images, which carry no chroma to tell."""
    image = np.asarray(pixels, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] < 3:
        return False
    return chroma_subsampling_score(image[..., :3]) < CHROMA_THRESHOLD


def estimate_noise_sigma(pixels: np.ndarray, compressed: bool | None = None) -> float:
    """Std of the additive Gaussian noise of an image, on the **0–255 scale**.

    Parameters
    ----------
    pixels : ndarray
        (H, W, C) or (H, W) float array in [0, 1] (the noisy image, clipped to [0, 1] as an
        8- or 16-bit file is). Each side needs at least ``MIN_SIDE`` (8) pixels.
    compressed : bool or None
        True for a JPEG-compressed image (its file says so): the noise it still holds
        (:func:`compressed_noise_std`); False for one never compressed (the patch estimate);
        None (default): decided from the pixels (:func:`looks_compressed`).

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
    if compressed is None:
        compressed = looks_compressed(image)
    if compressed:
        return compressed_noise_std(image) * 255.0
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
