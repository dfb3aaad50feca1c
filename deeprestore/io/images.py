"""Reading and writing image files (imageio; pypng for 16-bit PNG).

A file becomes an :class:`~deeprestore.arrays.Image` (float64 pixels (H, W, C) in [0, 1], bit
depth, alpha) and an :class:`~deeprestore.arrays.Image` is written back as the input was.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from deeprestore.arrays import Image, ImageError, from_array

#: the first bytes of every JPEG file (its SOI marker and the next marker's 0xFF)
JPEG_MAGIC = b"\xff\xd8\xff"
#: File suffixes taken as images when a directory is given.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: the smallest width and height, in pixels, an input may have
MIN_SIDE = 8


def check_min_side(image: Image, where: object) -> None:
    """Refuse (:class:`ImageError`) an ``image`` with a side under :data:`MIN_SIDE` pixels;
    ``where`` names it in the message (a path, or ``"image"``)."""
    if min(image.height, image.width) < MIN_SIDE:
        raise ImageError(f"{where}: {image.width}×{image.height} is too small (each side "
                         f"needs at least {MIN_SIDE} pixels)")


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
