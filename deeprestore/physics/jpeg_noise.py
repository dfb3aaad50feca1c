"""The power spectral density (PSD) of the noise a decoded JPEG still holds, for BM3D.

JPEG compression of a noisy image correlates its noise: the 8×8 DCT quantisation removes
much of the high frequencies of each block, 4:2:0 subsampling keeps chroma at half resolution.
The `bm3d` package denoises such stationary correlated noise when given its PSD instead of a
standard deviation (Mäkinen, Azzari & Foi, IEEE TIP 2020). :func:`jpeg_noise_psd` simulates
it: a proxy of the clean image (white-noise BM3D of the input at the σ that
:func:`~deeprestore.physics.noise.estimate_noise_sigma` reads from the decoded file), plus
white noise of std σ₀, compressed with the input file's own quantisation tables and chroma
subsampling; σ₀ is chosen by bisection so that the simulated file holds as much noise,
``std(decoded − proxy)``, as the estimator reads in the input, and the PSD is the mean
``|fft2(decoded − proxy)|²`` of a few draws, in the colour space BM3D filters in
(:data:`OPPONENT`): JPEG noise is strongly correlated across R, G and B (its fine scale is
luma alone), so it is measured in the transformed channels themselves. Measured in
docs/notes/jpeg-noise.md.

PSD convention (the `bm3d` package's): white noise of variance v on an M×N image has PSD
``v·M·N`` at every frequency, i.e. ``E|fft2(noise)|²``; a PSD has the image's size.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from deeprestore.physics.noise import estimate_noise_sigma

#: The `bm3d` package's opponent colour transform (``bm3d.rgb_to(..., 'opp')``), rows = channels
OPPONENT = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, -0.5], [0.25, -0.5, 0.25]])
#: Its inverse
OPPONENT_INVERSE = np.linalg.inv(OPPONENT)
#: Quality assumed for the simulated compression when the file's tables are unknown
DEFAULT_QUALITY = 85


def _jpeg_roundtrip(pixels: np.ndarray, options: dict[str, Any]) -> np.ndarray:
    """Clip, round to 8 bits, compress with Pillow (``options``) and decode; 0–255 floats."""
    from PIL import Image

    values = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values[..., 0] if values.shape[2] == 1 else values).save(
        buffer, format="JPEG", **options)
    buffer.seek(0)
    with Image.open(buffer) as image:
        decoded = np.asarray(image, dtype=np.float64)
    return decoded.reshape(pixels.shape)


def jpeg_noise_psd(
    pixels: np.ndarray,
    proxy: np.ndarray,
    *,
    qtables: dict[int, list[int]] | None = None,
    subsampling: int = 2,
    quality: int = DEFAULT_QUALITY,
    draws: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """PSD of the noise left in a decoded JPEG, per channel of BM3D's colour space.

    Parameters
    ----------
    pixels : ndarray
        The decoded JPEG, (H, W, C) with C = 3 (RGB) or 1 (grey), on the **0–255** scale.
    proxy : ndarray
        An estimate of the clean image, same shape and scale (e.g. white-noise BM3D of
        ``pixels`` at ``estimate_noise_sigma(pixels / 255, compressed=True)``).
    qtables, subsampling : dict or None, int
        The file's quantisation tables and chroma subsampling (:func:`jpeg_tables`); without
        tables, Pillow's ``quality`` is simulated with ``subsampling``.
    quality : int
        Quality used only when ``qtables`` is None.
    draws : int
        Simulated noise draws averaged.
    seed : int
        Seed of the simulated noise.

    Returns
    -------
    ndarray
        (H, W, C) float PSD on the **0–1** scale (white noise of std s/255 gives
        ``(s/255)²·H·W``), of the channels ``OPPONENT @ rgb`` for RGB, of the image for grey;
        pass it to :func:`deeprestore.denoisers.correlated.bm3d_psd`.
    """
    image = np.asarray(pixels, dtype=np.float64)
    clean = np.asarray(proxy, dtype=np.float64)
    if image.ndim != 3 or image.shape != clean.shape or image.shape[2] not in (1, 3):
        raise ValueError(f"expected (H, W, 1 or 3) pixels and proxy of one shape, got "
                         f"{image.shape} and {clean.shape}")
    options: dict[str, Any] = {"subsampling": subsampling}
    if qtables is None:
        options["quality"] = int(quality)
    else:
        options["qtables"] = qtables
    target = estimate_noise_sigma(image / 255, compressed=True)
    rng = np.random.default_rng(seed)
    noise = [rng.standard_normal(image.shape) for _ in range(draws)]

    def simulate(sigma0: float) -> list[np.ndarray]:
        return [_jpeg_roundtrip(clean + sigma0 * n, options) for n in noise]

    def reading(sigma0: float) -> float:  # the noise the simulated file holds (0–255)
        return float(np.std(simulate(sigma0)[0] - clean))

    # σ₀ such that the simulated file holds as much noise as the input is estimated to (the
    # estimate's own reading of the simulated file would not do: on the smooth proxy, image
    # content lifts it far more than on the input, and σ₀ came out half the size)
    low, high = 0.0, max(2.0 * target, 1.0)
    while reading(high) < target and high < 400:
        high *= 2
    for _ in range(12):
        middle = 0.5 * (low + high)
        if reading(middle) < target:
            low = middle
        else:
            high = middle
    sigma0 = 0.5 * (low + high)
    psd = np.zeros(image.shape)
    for decoded in simulate(sigma0):
        residual = (decoded - clean) / 255
        if image.shape[2] == 3:
            residual = residual @ OPPONENT.T
        psd += np.abs(np.fft.fft2(residual, axes=(0, 1))) ** 2
    return psd / draws
