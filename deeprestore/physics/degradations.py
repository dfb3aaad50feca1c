"""How the papers made their degraded inputs (DIP / DeepRED).

All images are numpy float arrays laid out (H, W, C) (or (H, W) for grayscale) with values in
[0, 1]. Masks are float64 (H, W) arrays with 1 = known pixel and 0 = missing pixel. Functions that
draw random numbers take an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from deeprestore.physics.kernels import named_kernel
from deeprestore.physics.operators import Blur

__all__ = [
    "add_gaussian_noise",
    "blur_image",
    "crop_to_multiple",
    "lanczos_downscale",
    "bicubic_upscale",
    "random_mask",
    "holes_mask",
    "text_mask",
    "parse_mask_spec",
    "DEFAULT_MASK_TEXT",
]

DEFAULT_MASK_TEXT = "Deep image prior: restoration without learning."


def _float_image(img: np.ndarray, who: str) -> np.ndarray:
    a = np.asarray(img)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{who}: expected a float image in [0, 1], got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{who}: expected an image (H, W) or (H, W, C), got shape {a.shape}")
    return a


def add_gaussian_noise(img: np.ndarray, sigma255: float, rng: np.random.Generator) -> np.ndarray:
    """Return ``clip(img + N(0, (sigma255/255)²), 0, 1)`` (float, same dtype, not quantised).

    ``img``: float (H, W[, C]) in [0, 1]; ``sigma255``: noise std on the 0–255 scale (25 for the
    denoising experiments, √2 for deblurring).
    """
    a = _float_image(img, "add_gaussian_noise")
    if sigma255 < 0:
        raise ValueError(f"sigma255 must be >= 0, got {sigma255}")
    noisy = a + rng.normal(0.0, sigma255 / 255.0, size=a.shape)
    return np.clip(noisy, 0.0, 1.0).astype(a.dtype, copy=False)


def blur_image(img: np.ndarray, kernel: np.ndarray | str) -> np.ndarray:
    """Circular (FFT) convolution of every channel of ``img`` with ``kernel``.

    Same convention as :class:`deeprestore.physics.operators.Blur` (kernel centre at (kh//2,
    kw//2)).
    ``kernel`` is a (kh, kw) array or a name for :func:`named_kernel`. Returns the same shape and
    dtype as ``img``, computed in float64. No clipping (a non-negative kernel keeps [0, 1]).
    """
    a = _float_image(img, "blur_image")
    k = named_kernel(kernel) if isinstance(kernel, str) else np.asarray(kernel, dtype=np.float64)
    planes = a[None, None] if a.ndim == 2 else np.moveaxis(a, -1, 0)[None]
    x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float64))
    with torch.no_grad():
        y = Blur(k).forward(x)[0].numpy()
    out = y[0] if a.ndim == 2 else np.moveaxis(y, 0, -1)
    return np.ascontiguousarray(out).astype(a.dtype, copy=False)


def crop_to_multiple(img: np.ndarray, factor: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Centre-crop ``img`` (H, W[, C]) so that height and width are multiples of ``factor``.

    Like the DIP code (``crop_image`` / ``load_LR_HR_imgs_sr``), the remainder is split between
    the two sides: ``top = (H % factor) // 2``, ``left = (W % factor) // 2`` (the extra pixel of
    an odd remainder is dropped from the bottom/right). Returns ``(cropped, (top, left, height,
    width))`` with ints; ``cropped = img[top:top+height, left:left+width]``.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    h, w = int(img.shape[0]), int(img.shape[1])
    nh, nw = h - h % factor, w - w % factor
    if nh == 0 or nw == 0:
        raise ValueError(f"image is {h}x{w}, smaller than the crop multiple {factor}")
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[top : top + nh, left : left + nw], (top, left, nh, nw)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def _pil_resize(a: np.ndarray, size_wh: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """Resize a float (H, W[, C]) image through PIL 8-bit images; returns float (H', W'[, C])."""
    if a.ndim == 2 or a.shape[2] == 3:  # 8-bit 'L' or 'RGB' PIL image, as DIP's code
        out = np.asarray(Image.fromarray(_to_uint8(a)).resize(size_wh, method))
    else:  # any other channel count: one 8-bit 'L' image per channel
        chans = [
            np.asarray(Image.fromarray(_to_uint8(a[..., c])).resize(size_wh, method))
            for c in range(a.shape[2])
        ]
        out = np.stack(chans, axis=-1)
    return (out.astype(np.float64) / 255.0).astype(a.dtype, copy=False)


def lanczos_downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Downscale by ``factor`` with PIL ``Image.LANCZOS`` (antialiased Lanczos-3), as DIP did.

    The DIP/DeepRED code resizes the 8-bit PIL RGB image (``Image.ANTIALIAS`` == LANCZOS), so the
    image is quantised to 8 bits (round(x*255)), resized in PIL, and returned as float /255 —
    the low-resolution input is 8-bit quantised. ``img`` (H, W[, C]) must have H and W divisible
    by ``factor`` (use :func:`crop_to_multiple` first); output is (H/f, W/f[, C]).
    """
    a = _float_image(img, "lanczos_downscale")
    h, w = a.shape[:2]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(
            f"lanczos_downscale: the image is {h}x{w}, not divisible by {factor}; "
            "crop it with crop_to_multiple first"
        )
    return _pil_resize(a, (w // factor, h // factor), Image.Resampling.LANCZOS)


def bicubic_upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Upscale by ``factor`` with PIL ``Image.BICUBIC`` on the 8-bit image (the SR baseline).

    As in DIP's ``get_baselines``: 8-bit quantised input, PIL bicubic resize to (H*f, W*f),
    returned as float /255. ``img`` (h, w[, C]) -> (h*f, w*f[, C]).
    """
    a = _float_image(img, "bicubic_upscale")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    h, w = a.shape[:2]
    return _pil_resize(a, (w * factor, h * factor), Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------
# Inpainting masks
# --------------------------------------------------------------------------------------------


def _check_p(p_missing: float) -> float:
    p = float(p_missing)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the missing fraction must be in [0, 1], got {p_missing}")
    return p


def random_mask(h: int, w: int, p_missing: float, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel Bernoulli mask (H, W) float64: each pixel is missing (0) with prob. p_missing."""
    p = _check_p(p_missing)
    return (rng.random((h, w)) >= p).astype(np.float64)


def holes_mask(h: int, w: int, p_missing: float, rng: np.random.Generator) -> np.ndarray:
    """Mask (H, W) float64 with random rectangular holes (0) covering about p_missing of the area.

    Rectangles with sides uniform in [5 %, 20 %] of the image side are placed uniformly at random
    (they may overlap) until the missing area reaches ``round(p_missing * H * W)`` pixels; the
    last rectangles are shrunk so the target is not overshot by much.
    """
    p = _check_p(p_missing)
    mask = np.ones((h, w), dtype=np.float64)
    target = int(round(p * h * w))
    lo_h, hi_h = max(1, round(0.05 * h)), max(1, round(0.2 * h))
    lo_w, hi_w = max(1, round(0.05 * w)), max(1, round(0.2 * w))
    missing = 0
    for _ in range(1_000_000):
        if missing >= target:
            break
        rh = int(rng.integers(lo_h, hi_h + 1))
        rw = int(rng.integers(lo_w, hi_w + 1))
        need = target - missing
        if rh * rw > need:  # shrink the rectangle to the missing area still needed
            s = np.sqrt(need / (rh * rw))
            rh, rw = max(1, int(np.ceil(rh * s))), max(1, int(np.ceil(rw * s)))
        top = int(rng.integers(0, h - rh + 1))
        left = int(rng.integers(0, w - rw + 1))
        mask[top : top + rh, left : left + rw] = 0.0
        missing = int(h * w - mask.sum())
    return mask


def text_mask(h: int, w: int, text: str | None = None) -> np.ndarray:
    """Text-overlay mask (H, W) float64: text pixels are 0 (missing), the rest 1.

    Draws ``text`` (default :data:`DEFAULT_MASK_TEXT`) with PIL's default font, repeated along
    each line and on lines spaced 1.5 text heights apart, starting at the top-left corner.
    Deterministic (no randomness).
    """
    text = DEFAULT_MASK_TEXT if text is None else text
    if not text.strip():
        raise ValueError("text_mask: the text must not be empty")
    canvas = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text + " ", font=font)
    tw, th = max(1, right - left), max(1, bottom - top)
    step = max(th + 1, int(round(1.5 * th)))
    line = text + " "
    reps = w // tw + 2
    for y in range(0, h, step):
        # shift each line so the columns of words do not line up vertically
        offset = -((y // step) * tw // 3) % tw
        draw.text((-offset, y), line * reps, fill=0, font=font)
    return (np.asarray(canvas) > 127).astype(np.float64)


def _load_mask_image(path: Path, h: int, w: int) -> np.ndarray:
    import imageio.v3 as iio

    try:
        m = np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - re-raised as a one-line ValueError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"mask file {str(path)!r}: cannot read it ({msg})") from exc
    if m.ndim == 3:
        m = m[..., :3] if m.shape[-1] in (3, 4) else m
        m = (m != 0).any(axis=-1)
    elif m.ndim == 2:
        m = m != 0
    else:
        raise ValueError(f"mask file {str(path)!r} is not an image (shape {m.shape})")
    if m.shape != (h, w):
        raise ValueError(f"mask is {m.shape[0]}x{m.shape[1]} but the image is {h}x{w}")
    return m.astype(np.float64)


def parse_mask_spec(spec: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Build an (H, W) float64 mask (1 = known) from a spec string.

    ``random:P`` (:func:`random_mask`), ``holes:P`` (:func:`holes_mask`), ``text``
    (:func:`text_mask`), or a path to a mask image where nonzero pixels (in any of R, G, B; alpha
    ignored) are known. Sizes are written height x width; a size mismatch raises
    ``ValueError("mask is HxW but the image is HxW")``.
    """
    s = spec.strip()
    for prefix, fn in (("random:", random_mask), ("holes:", holes_mask)):
        if s.startswith(prefix):
            try:
                p = float(s[len(prefix) :])
            except ValueError:
                raise ValueError(
                    f"mask spec {spec!r}: expected {prefix}P with P a number in [0, 1]"
                ) from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"mask spec {spec!r}: P must be in [0, 1]")
            return fn(h, w, p, rng)
    if s == "text":
        return text_mask(h, w)
    path = Path(s)
    if not path.is_file():
        raise ValueError(
            f"mask spec {spec!r} is neither random:P, holes:P, text nor an existing mask image"
        )
    return _load_mask_image(path, h, w)
