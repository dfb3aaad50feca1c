"""Reading and writing images (imageio), and moving them between numpy and torch.

In memory an image is a float64 numpy array (H, W, C) in [0, 1] plus what is needed to write it
back as the input was: its bit depth (8 or 16) and, for RGBA, the untouched alpha channel.
Torch tensors are (1, C, H, W) float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

#: File suffixes taken as images when a directory is given.
#: the first bytes of every JPEG file (its SOI marker and the next marker's 0xFF)
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_SIDE = 8


class ImageError(ValueError):
    """An image file that cannot be read or written (one-line message naming the file)."""


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
    #: a JPEG file's quantisation tables and chroma subsampling (:func:`read_jpeg_tables`)
    jpeg_tables: tuple[dict[int, list[int]], int] | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png16(path: Path) -> bool:
    """True for a PNG with 16 bits per sample (Pillow would silently read it as 8-bit colour)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16


def _read_png16(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = int(info["planes"])
    array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return array.reshape(height, width, planes)


def read_image(path: str | Path) -> Image:
    """Read an image file (PNG, JPEG, TIFF, BMP, WebP) into an :class:`Image`.

    8- and 16-bit, grey, RGB and RGBA; EXIF orientation is applied. 16-bit PNGs are read with
    pypng (Pillow reads 16-bit colour PNGs as 8-bit).
    """
    import imageio.v3 as iio

    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: the file is empty")
    try:
        array = _read_png16(p) if _is_png16(p) else iio.imread(p, rotate=True)
    except Exception as err:  # imageio, Pillow and pypng raise many kinds for bad files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Could not find a backend" in reason:
            reason = "not a PNG, JPEG, TIFF, BMP or WebP file"
        raise ImageError(f"{p}: cannot read it as an image ({reason})") from None
    if array.ndim == 4:  # animated / multi-page: keep the first frame
        array = array[0]
    image = from_array(array, str(p))
    with p.open("rb") as head:
        if head.read(3) == JPEG_MAGIC:
            image.compressed = True
            image.jpeg_tables = read_jpeg_tables(p)
    return image


def read_jpeg_tables(path: Path | BinaryIO) -> tuple[dict[int, list[int]], int] | None:
    """The quantisation tables (Pillow's ``Image.quantization``: table index → 64 values) and
    chroma subsampling code (0: 4:4:4, 1: 4:2:2, 2: 4:2:0, -1: other) of a JPEG file (a path or
    an open binary file), as Pillow's JPEG writer takes them (``qtables=``, ``subsampling=``);
    None when Pillow cannot say."""
    from PIL import Image as PillowImage
    from PIL import JpegImagePlugin

    try:
        with PillowImage.open(path) as image:
            tables = {int(k): list(v) for k, v in image.quantization.items()}
            sampling = JpegImagePlugin.get_sampling(image) if image.mode != "L" else 0
    except Exception:  # Pillow raises many kinds for files it reads only in part
        return None
    return (tables, int(sampling)) if tables else None


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) array in [0, 1] → (1, C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None]


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor → (H, W, C) float64 array in [0, 1]."""
    return tensor.detach()[0].to("cpu", torch.float64).clamp(0, 1).numpy().transpose(1, 2, 0)


def quantise(image: Image) -> np.ndarray:
    """The integer array to save: uint8 or uint16, (H, W) for one channel, RGBA with alpha."""
    scale = 65535.0 if image.bit_depth == 16 else 255.0
    dtype = np.uint16 if image.bit_depth == 16 else np.uint8
    pixels = np.clip(image.pixels, 0.0, 1.0)
    if image.alpha is not None:
        pixels = np.concatenate([pixels, image.alpha[:, :, None]], axis=2)
    out = np.round(pixels * scale).astype(dtype)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _encode_png16(array: np.ndarray) -> bytes:
    import io

    import png

    planes = 1 if array.ndim == 2 else array.shape[2]
    height, width = array.shape[:2]
    writer = png.Writer(width, height, greyscale=planes in (1, 2), alpha=planes in (2, 4),
                        bitdepth=16, compression=6)
    buffer = io.BytesIO()
    writer.write(buffer, array.reshape(height, width * planes).astype(np.uint16))
    return buffer.getvalue()


def encode_image(image: Image, suffix: str) -> bytes:
    """The file contents of ``image`` in the format of ``suffix`` (".png", ".jpg", ...).

    16-bit images are written as 16-bit PNG (pypng) whatever the suffix asks for PNG.
    """
    import imageio.v3 as iio

    array = quantise(image)
    fmt = suffix.lower()
    if image.bit_depth == 16 and fmt == ".png":
        return _encode_png16(array)
    if fmt in (".jpg", ".jpeg"):
        if image.bit_depth == 16:
            array = np.round(array / 257.0).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]
        return iio.imwrite("<bytes>", array, extension=fmt, quality=95)
    return iio.imwrite("<bytes>", array, extension=fmt)
