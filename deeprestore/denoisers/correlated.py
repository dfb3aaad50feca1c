"""BM3D for noise that is not white: the `bm3d` package given the noise's power spectrum.

:func:`bm3d_psd` runs the package on an image whose noise has a known PSD (the convention of
:mod:`deeprestore.physics.jpeg_noise`); :func:`jpeg_bm3d` is the denoiser ``bm3d-jpeg`` made
for one decoded JPEG: the PSD of the noise its file still holds, simulated once on first use
and scaled to the σ of each call. Measured against white-noise BM3D in
docs/notes/jpeg-noise.md. Two traps of the package (v4.0.3 on `bm4d` 4.2.5) are avoided here:

* ``bm3d_rgb`` maps an (M, N, 3) PSD through the squared colour matrix, which holds only for
  noise independent across R, G and B; JPEG noise is not, so colour images are transformed
  here and each opponent channel gets the PSD measured in it.
* a PSD array makes the package call ``np.trapz``, which numpy 2.4 removed; the alias is put
  back (to ``np.trapezoid``) for the duration of the call only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from deeprestore.denoisers import Denoiser
from deeprestore.denoisers.reference import bm3d_package
from deeprestore.physics.jpeg_noise import OPPONENT, OPPONENT_INVERSE, jpeg_noise_psd
from deeprestore.physics.noise import estimate_noise_sigma


@contextmanager
def _numpy_trapz() -> Iterator[None]:
    """``np.trapz`` (removed in numpy 2.4, used by `bm4d` for PSD inputs) while in the block."""
    if hasattr(np, "trapz"):
        yield
        return
    np.trapz = np.trapezoid  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.trapz


def bm3d_psd(pixels: np.ndarray, psd: np.ndarray, *, threads: int = 0,
             profile: Any = None) -> np.ndarray:
    """BM3D (the `bm3d` package) of an image whose noise has the PSD ``psd``.

    Parameters
    ----------
    pixels : ndarray
        (H, W, 3) RGB or (H, W, 1) grey image on the **0–1** scale.
    psd : ndarray
        (H, W, C) PSD on the 0–1 scale, in the channels of
        :func:`~deeprestore.physics.jpeg_noise.jpeg_noise_psd` (opponent for RGB).
    threads : int
        The package's thread count (0: all cores; 1: single-threaded, reproducible).
    profile : bm3d.BM3DProfile or None
        Its settings (None: the default profile).

    Returns
    -------
    ndarray
        The denoised image, shape of ``pixels``, 0–1 scale. RGB is CBM3D done by hand: the
        opponent transform with the package's per-channel range normalisation, block matching
        on its first channel, each channel filtered with its own PSD.
    """
    import bm3d

    image = np.asarray(pixels, dtype=np.float64)
    psd = np.asarray(psd, dtype=np.float64).reshape(image.shape)
    settings = bm3d.BM3DProfile() if profile is None else profile
    settings.num_threads = int(threads)
    with _numpy_trapz(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if image.shape[2] == 1:
            out = bm3d.bm3d(image[..., 0], psd[..., 0], profile=settings)
            return np.asarray(out).reshape(image.shape)
        opponent = image @ OPPONENT.T
        low, high = opponent.min(axis=(0, 1)), opponent.max(axis=(0, 1))
        span = np.where(high > low, high - low, 1.0)
        out = bm3d.bm3d((opponent - low) / span, psd / span**2, profile=settings)
    return (np.asarray(out) * span + low) @ OPPONENT_INVERSE.T


def jpeg_bm3d(observed: np.ndarray, tables: tuple[dict[int, list[int]], int] | None
              ) -> Denoiser:
    """The denoiser ``bm3d-jpeg`` for one decoded JPEG ``observed`` ((H, W, C) on 0–1;
    ``tables``: its file's quantisation tables and subsampling, None: quality 85, 4:2:0).

    Its first call simulates the PSD of the noise the file holds (one white-noise BM3D pass of
    ``observed`` as the clean proxy, then :func:`~deeprestore.physics.jpeg_noise.jpeg_noise_psd`)
    at the σ the file reads (:func:`~deeprestore.physics.noise.estimate_noise_sigma`); each
    call ``f(x, sigma)`` — x (N, C, H, W) in [0, 1] of ``observed``'s size, sigma on the 0–255
    scale — scales that PSD by (sigma / σ read)², so that a σ given by hand, or DeepRED's
    ``sigma_f``, sets the level and the file sets the shape.
    """
    image = np.asarray(observed, dtype=np.float64)
    spectrum: list[np.ndarray] = []  # made on first use
    read = max(estimate_noise_sigma(image, compressed=True), 1e-3)

    def psd(threads: int | None) -> np.ndarray:
        if not spectrum:
            proxy = bm3d_package(torch.from_numpy(image.transpose(2, 0, 1)[None].copy()), read,
                                 threads=threads)[0].numpy().transpose(1, 2, 0)
            qtables, subsampling = (None, 2) if tables is None else tables
            spectrum.append(jpeg_noise_psd(image * 255, proxy * 255, qtables=qtables,
                                           subsampling=subsampling))
        return spectrum[0]

    def function(x: torch.Tensor, sigma: float, threads: int | None = None) -> torch.Tensor:
        if tuple(x.shape[-2:]) != image.shape[:2] or x.shape[1] != image.shape[2]:
            raise ValueError(f"bm3d-jpeg was made for a {image.shape[1]}×{image.shape[0]} "
                             f"image of {image.shape[2]} channels, got {tuple(x.shape)}")
        if sigma == 0:
            return x.clone()
        scaled = psd(threads) * (sigma / read) ** 2
        arrays = x.detach().to("cpu", torch.float64).numpy()
        out = np.stack([bm3d_psd(a.transpose(1, 2, 0), scaled, threads=threads or 0)
                        .transpose(2, 0, 1) for a in arrays])
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    return Denoiser("bm3d-jpeg", function, "cpu", "BM3D given the spectrum of the noise a "
                    "JPEG file holds (simulated with its own quantisation tables)", threaded=True)
