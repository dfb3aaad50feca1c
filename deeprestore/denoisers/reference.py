"""The paper's reference denoisers, on the CPU: scikit-image NLM and the `bm3d` package.

Both take x as a float tensor (N, C, H, W) in [0, 1] and sigma on the 0–255 scale, and return a
tensor of the same shape, dtype and device (computed in numpy on the host).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

#: The DeepRED authors' NLM settings (REFERENCE.md §7), used by :func:`nlm_skimage` and as the
#: defaults of :func:`deeprestore.denoisers.nlm_torch.nlm_torch`: patch side (pixels), search
#: radius (pixels) and the filtering parameter h as a multiple of sigma.
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_FACTOR = 0.6


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64).numpy()


def _from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


def nlm_skimage(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Fast non-local means exactly as the DeepRED authors ran it (REFERENCE.md §7).

    Each channel of each image is denoised on its own with
    ``skimage.restoration.denoise_nl_means(ch, h=NLM_H_FACTOR s, sigma=s, fast_mode=True,
    patch_size=NLM_PATCH_SIZE, patch_distance=NLM_PATCH_DISTANCE)`` where ``s = sigma / 255``.
    x: (N, C, H, W) in [0, 1]; sigma: 0–255 scale.
    """
    from skimage.restoration import denoise_nl_means

    if sigma == 0:
        return x.clone()
    s = sigma / 255.0
    images = _to_numpy(x)
    out = np.empty_like(images)
    for n in range(images.shape[0]):
        for c in range(images.shape[1]):
            out[n, c] = denoise_nl_means(
                images[n, c],
                h=NLM_H_FACTOR * s,
                sigma=s,
                fast_mode=True,
                patch_size=NLM_PATCH_SIZE,
                patch_distance=NLM_PATCH_DISTANCE,
            )
    return _from_numpy(out, x)


def bm3d_package(x: torch.Tensor, sigma: float, *, threads: int | None = None) -> torch.Tensor:
    """BM3D from the `bm3d` package: CBM3D (``bm3d_rgb``) for 3 channels, BM3D per channel else.

    x: (N, C, H, W) in [0, 1]; sigma: noise std on the 0–255 scale (passed as ``sigma/255``, the
    image's own scale). threads: CPU threads of the package's own parallel loop (None: its
    automatic choice, all cores; 1: single-threaded, bit-reproducible — the package notes that
    more threads may change the last bits of the aggregation). The `bm3d` package is free for
    non-commercial use only.
    """
    import bm3d

    if sigma == 0:
        return x.clone()
    s = sigma / 255.0
    profile = bm3d.BM3DProfile()
    profile.num_threads = 0 if threads is None else int(threads)
    images = _to_numpy(x)
    out = np.empty_like(images)
    for n in range(images.shape[0]):
        if images.shape[1] == 3:
            rgb = np.moveaxis(images[n], 0, -1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                denoised = np.asarray(bm3d.bm3d_rgb(rgb, sigma_psd=s, profile=profile))
            if np.all(np.isfinite(denoised)):
                out[n] = np.moveaxis(denoised, -1, 0)
                continue
            # CBM3D normalises each channel of its colour transform by its range: an image with
            # a flat one (grey RGB, a constant image, x = 0 at the start of DeepRED's SR) gives
            # NaN. BM3D per channel, as for other channel counts, handles those.
        for c in range(images.shape[1]):
            denoised = bm3d.bm3d(images[n, c], sigma_psd=s, profile=profile)
            out[n, c] = np.asarray(denoised).reshape(images.shape[2:])
    return _from_numpy(out, x)
