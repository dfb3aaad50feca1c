"""Images in memory, and their conversions between numpy arrays and torch tensors.

An image is a float64 numpy array (H, W, C) in [0, 1] plus what is needed to write it back as
the input was (:class:`Image`): its bit depth (8 or 16) and, for RGBA, the untouched alpha
channel. Torch tensors are (1, C, H, W) float32. Reading and writing files is
:mod:`deeprestore.io.images`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class ImageError(ValueError):
    """An image that cannot be used: a file that cannot be read or written, an array of the
    wrong shape or values (one-line message naming the file or the array)."""


@dataclass
class Image:
    """Pixels (H, W, C) float64 in [0, 1], C = 1 or 3; bit depth 8 or 16; alpha (H, W) or None;
    ``compressed``: True when read from a JPEG file, None when the file does not say (a PNG
    may hold a decoded JPEG) — what ``--sigma auto`` needs to know; ``jpeg_tables``: how a
    JPEG file was compressed (what its noise model needs)."""

    pixels: np.ndarray
    bit_depth: int = 8
    alpha: np.ndarray | None = None
    compressed: bool | None = None
    #: a JPEG file's quantisation tables and chroma subsampling
    #: (:func:`~deeprestore.io.images.read_jpeg_tables`)
    jpeg_tables: tuple[dict[int, list[int]], int] | None = None

    @property
    def height(self) -> int:
        """Rows, H."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns, W."""
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels, C (1 or 3; alpha apart)."""
        return int(self.pixels.shape[2])


def from_array(array: np.ndarray, where: str = "image") -> Image:
    """Turn an array from imageio (H, W), (H, W, C) of uint8/uint16/float into an :class:`Image`."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{where}: unsupported image shape {a.shape} (need H×W, H×W×3 or H×W×4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"{where}: the image is empty ({a.shape[1]}×{a.shape[0]} pixels)")
    if a.dtype == np.uint8:
        depth, scaled = 8, a.astype(np.float64) / 255.0
    elif a.dtype == np.uint16:
        depth, scaled = 16, a.astype(np.float64) / 65535.0
    elif a.dtype == bool:
        depth, scaled = 8, a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageError(f"{where}: the image has NaN or infinite values")
        depth, scaled = 8, np.clip(a.astype(np.float64), 0.0, 1.0)
    elif np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        depth = 16 if info.max > 255 else 8
        scaled = np.clip(a.astype(np.float64) / (65535.0 if depth == 16 else 255.0), 0.0, 1.0)
    else:
        raise ImageError(f"{where}: unsupported pixel type {a.dtype}")
    alpha = None
    if scaled.ndim == 3 and scaled.shape[2] == 4:
        alpha = scaled[:, :, 3].copy()
        scaled = scaled[:, :, :3]
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    return Image(np.ascontiguousarray(scaled), depth, alpha)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) array in [0, 1] → (1, C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None]


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor → (H, W, C) float64 array in [0, 1]."""
    return tensor.detach()[0].to("cpu", torch.float64).clamp(0, 1).numpy().transpose(1, 2, 0)
