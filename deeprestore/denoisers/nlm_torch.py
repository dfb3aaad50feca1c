"""Non-local means in pure torch, matching scikit-image's fast mode as the DeepRED authors ran it.

The reference is :func:`deeprestore.denoisers.reference.nlm_skimage`:
``skimage.restoration.denoise_nl_means(ch, h=h_factor s, sigma=s, fast_mode=True, patch_size=...,
patch_distance=...)`` applied to each channel on its own, with ``s = sigma / 255`` and the
authors' parameters (``NLM_*`` in :mod:`deeprestore.denoisers.reference`). Its fast mode
(``_fast_nl_means_denoising_2d`` in ``skimage/restoration/_nl_means_denoising.pyx``, Froment 2014)
is reproduced here term by term, including its quirks:

* padding: ``np.pad(mode="reflect")`` (mirror without repeating the edge pixel) by
  ``offset + d + 1`` pixels, where ``offset = s // 2`` (``s`` made odd) and ``d`` is the search
  distance; the shifted pixel values near the border come from that padded image;
* patch distance: the integral-image box ``I[r+o, c+o] + I[r-o, c-o] - I[r-o, c+o] - I[r+o, c-o]``
  sums the squared differences over the ``(s-1) x (s-1)`` box of rows ``r-o+1 .. r+o`` and columns
  ``c-o+1 .. c+o`` (4 x 4 for ``s = 5``, not centred on the pixel), each term reduced by ``2 var``;
  the sum is clamped at 0 and divided by ``h^2 s^2`` (with ``s^2``, not the box's ``(s-1)^2``);
* weight: 0 when that normalised distance exceeds 5, else scikit-image's Schraudolph
  approximation ``_fast_exp(-distance)`` (so the null shift weighs ``_fast_exp(0) ~ 0.9710``);
  every shift of the ``(2d+1)^2`` window, the null one included, counts once (skimage visits half
  of them with ``alpha = 1`` and the column ``t_col = 0`` twice with ``alpha = 0.5``);
* output: the weighted mean of the shifted (padded) pixel values, normalised by the sum of weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deeprestore.denoisers.reference import NLM_H_FACTOR, NLM_PATCH_DISTANCE, NLM_PATCH_SIZE

#: scikit-image's ``DISTANCE_CUTOFF``: shifts whose normalised patch distance exceeds it weigh 0.
DISTANCE_CUTOFF = 5.0
#: ``2^20 / ln 2`` and ``1023 * 2^20 - 60801``: scikit-image's ``fast_exp.h`` (Schraudolph 1999).
_EXP_A = 1512775.3951951856938
_EXP_BC = 1072632447
#: Elements (images x pixels x shifts) processed at once on a CPU; bounds the temporaries to
#: ~4 MiB each (about 1 shift of a 512 x 512 x 3 image; whole windows of small images), which
#: stay in cache. On a GPU the chunk follows the free memory (:func:`chunk_elements`).
_CHUNK_ELEMENTS = 1 << 20
#: on a GPU, the share of the free device memory a call's temporaries may take
_GPU_MEMORY_SHARE = 0.25
#: bytes of temporaries per chunk element (shifted regions, differences, box sums in float64,
#: weights: an upper bound read off the code)
_BYTES_PER_ELEMENT = 48


def chunk_elements(device: torch.device) -> int:
    """Elements (images x pixels x shifts) one chunk of a call on ``device`` processes: the fixed
    CPU size, or on CUDA what a quarter of the free memory holds (at least the CPU size): a
    512² colour image then takes every shift of its window in one chunk, a few dozen kernel
    launches instead of ~2 200 (issue 42)."""
    if device.type != "cuda":
        return _CHUNK_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return max(_CHUNK_ELEMENTS, int(free * _GPU_MEMORY_SHARE) // _BYTES_PER_ELEMENT)


def _fast_exp(y: torch.Tensor) -> torch.Tensor:
    """scikit-image's ``_fast_exp`` (Schraudolph's exp approximation), bit for bit for float64 y.

    The C code writes ``(int32)(EXP_A * y) + EXP_BC`` into the high word of a float64 whose low word
    is 0. That float64 has 20 mantissa bits, so it is exactly a float32 with the same exponent; the
    float32 bits are built directly so that this also runs on GPUs. Valid for y in [-87, 0].
    y: any shape, float32 or float64; returns the same shape and dtype. For float32 y the product
    ``EXP_A * y`` is rounded to float32 first, which can move the result by one 2^-20 step.
    """
    if y.dtype == torch.float64:
        high = torch.trunc(y * _EXP_A).to(torch.int64) + _EXP_BC
    else:  # float32 product: the integer part may differ by 1 (a 1e-6 relative change)
        high = torch.trunc(y.float() * _EXP_A).to(torch.int32) + _EXP_BC
    # float64 exponent bias 1023 -> float32 bias 127: subtract (1023 - 127) from the exponent field,
    # then move the 20 mantissa bits to the top of float32's 23.
    bits = ((high - ((1023 - 127) << 20)) << 3).to(torch.int32)
    return bits.view(torch.float32).to(y.dtype)


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of ``np.pad(a, pad, mode="reflect")`` along an axis of length n (any pad, n >= 1)."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


@dataclass(frozen=True)
class _Window:
    """Index geometry of the fast NLM on an (H, W) image.

    ``offset``: half the (odd) patch side; ``d``: search distance. The weights of the half-window
    shifts are computed on the grid of pixels p in [-d, H + d) x [-d, W + d) (``ext_h`` x
    ``ext_w``), whose patch boxes span the region of ``reg_h`` x ``reg_w`` pixels that starts at
    row/column ``r0`` of the image reflect-padded by ``pad`` pixels.
    """

    height: int
    width: int
    offset: int
    d: int

    @property
    def box(self) -> int:
        """Side of scikit-image's integral-image box (s - 1)."""
        return 2 * self.offset

    @property
    def lo(self) -> int:
        """The box spans rows p - lo .. p + offset (scikit-image's off-centre box)."""
        return max(self.offset - 1, 0)

    @property
    def ext_h(self) -> int:
        """Rows of the extended grid of pixels p."""
        return self.height + 2 * self.d

    @property
    def ext_w(self) -> int:
        """Columns of the extended grid of pixels p."""
        return self.width + 2 * self.d

    @property
    def reg_h(self) -> int:
        """Rows of the region the boxes of the extended grid cover."""
        return self.ext_h + self.lo + self.offset

    @property
    def reg_w(self) -> int:
        """Columns of the region the boxes of the extended grid cover."""
        return self.ext_w + self.lo + self.offset

    @property
    def pad(self) -> int:
        """Reflect padding, enough for the box of p + u with p in the extended grid (scikit-image
        pads by offset + d + 1)."""
        return 2 * self.d + self.offset

    @property
    def r0(self) -> int:
        """Padded index of the region's first row/column."""
        return self.pad - self.d - self.lo


def _check_arguments(
    x: torch.Tensor, sigma: float, patch_size: int, patch_distance: int, h_factor: float
) -> None:
    """Raise a one-line error for arguments :func:`nlm_torch` does not take."""
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be a non-negative number (0-255 scale), got {sigma}")
    if patch_size < 1 or patch_distance < 0:
        raise ValueError(
            f"need patch_size >= 1 and patch_distance >= 0, got {patch_size}, {patch_distance}"
        )
    if not h_factor > 0:
        raise ValueError(f"h_factor must be positive, got {h_factor}")


def _shift_weights(
    moved: torch.Tensor, ref: torch.Tensor, win: _Window, var2: float, h2s2: float
) -> torch.Tensor:
    """The weights w_u(p) of K shifts u on the extended grid, (B, K, ext_h, ext_w).

    moved: (B, K, reg_h, reg_w), the region shifted by each u; ref: (B, reg_h, reg_w), the region.
    var2: 2 var, subtracted per squared difference; h2s2: h^2 s^2, the distance normaliser.
    """
    box = win.box
    if win.offset > 0:
        # Box sums of squared differences over the box x box window: (B, K, ext_h, ext_w);
        # avg_pool2d times the area matches skimage's integral image to float rounding.
        dist = F.avg_pool2d((moved - ref.unsqueeze(1)).square_(), box, stride=1)
        dist = dist.mul_(box * box).sub_(box * box * var2).clamp_(min=0.0).div_(h2s2)
    else:  # skimage's empty box: distance 0 for every shift
        shape = (*moved.shape[:2], win.ext_h, win.ext_w)
        dist = torch.zeros(shape, dtype=moved.dtype, device=moved.device)
    too_far = dist > DISTANCE_CUTOFF
    zero = torch.zeros((), dtype=moved.dtype, device=moved.device)
    # w_u(p) on the extended grid (the clamp only keeps the masked-out exponents in range)
    return torch.where(too_far, zero, _fast_exp(-dist.clamp_(max=2 * DISTANCE_CUTOFF)))


def _accumulate(
    num: torch.Tensor,
    den: torch.Tensor,
    padded: torch.Tensor,
    moved: torch.Tensor,
    weight: torch.Tensor,
    shifts: list[tuple[int, int]],
    win: _Window,
) -> None:
    """Add the weighted values of K shifts to ``num`` and their weights to ``den`` (in place).

    num, den: (B, H, W); padded: (B, H + 2 pad, W + 2 pad); moved: (B, K, reg_h, reg_w);
    weight: (B, K, ext_h, ext_w) from :func:`_shift_weights`; shifts: the K shifts (dr, dc).
    Each weight is credited to both pixels of its pair.
    """
    d, lo, pad, height, width = win.d, win.lo, win.pad, win.height, win.width
    # p = q: weight w_u(q), value x[q + u] (the same window of every shifted region)
    w_here = weight[:, :, d : d + height, d : d + width]
    v_here = moved[:, :, d + lo : d + lo + height, d + lo : d + lo + width]
    num += (w_here * v_here).sum(dim=1)
    den += w_here.sum(dim=1)
    for k, (dr, dc) in enumerate(shifts):
        # p = q - u: weight w_u(q - u) (= w_{-u}(q)), value x[q - u]
        w_back = weight[:, k, d - dr : d - dr + height, d - dc : d - dc + width]
        num.addcmul_(w_back, padded[:, pad - dr : pad - dr + height, pad - dc : pad - dc + width])
        den += w_back


@functools.cache
def _center_weight(dtype: torch.dtype) -> float:
    """``_fast_exp(0)`` in ``dtype``: the weight of the null shift, computed once per dtype on
    the host (no read in a call)."""
    return float(_fast_exp(torch.zeros(1, dtype=dtype)).item())


def nlm_torch(
    x: torch.Tensor,
    sigma: float,
    *,
    patch_size: int = NLM_PATCH_SIZE,
    patch_distance: int = NLM_PATCH_DISTANCE,
    h_factor: float = NLM_H_FACTOR,
) -> torch.Tensor:
    """Fast non-local means, each channel on its own, matching scikit-image's fast mode.

    Equivalent to ``denoise_nl_means(ch, h=h_factor * s, sigma=s, fast_mode=True,
    patch_size=patch_size, patch_distance=patch_distance)`` on every (H, W) channel ``ch`` of every
    image, with ``s = sigma / 255`` (see the module docstring for the exact formula). The
    defaults are the DeepRED authors' settings (:mod:`deeprestore.denoisers.reference`).

    Args:
        x: (N, C, H, W) float tensor with values in [0, 1], on any device. Channels are denoised
            independently (grayscale patch distances per channel, as the DeepRED authors did).
        sigma: noise standard deviation on the 0-255 scale (>= 0); 0 returns a copy of ``x``.
        patch_size: patch side in pixels (made odd like scikit-image: an even size gets + 1).
        patch_distance: search radius in pixels; (2 * patch_distance + 1)^2 shifts are compared.
        h_factor: filtering parameter ``h`` as a multiple of ``sigma``.

    Returns:
        The denoised images, (N, C, H, W), same dtype and device as ``x``. Computed in float32
        (float64 for float64 input).
    """
    _check_arguments(x, sigma, patch_size, patch_distance, h_factor)
    if sigma == 0 or x.numel() == 0:
        return x.clone()

    n, c, height, width = x.shape
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    s = patch_size + 1 if patch_size % 2 == 0 else patch_size
    win = _Window(height, width, offset=s // 2, d=patch_distance)
    d, pad, r0 = win.d, win.pad, win.r0
    sigma01 = sigma / 255.0
    var2 = 2.0 * sigma01 * sigma01  # skimage subtracts 2 var per squared difference
    h2s2 = (h_factor * sigma01) ** 2 * s * s

    # Every pair (p, p + u) has one weight w_u(p) = w_{-u}(p + u): like skimage, compute it once
    # for the half-window shifts u (dr > 0, or dr == 0 and dc > 0) on a grid extended by d, and
    # credit it to both p (value x[p + u]) and p + u (value x[p]). The null shift has distance
    # max(-box^2 * 2 var, 0) = 0, hence the constant weight _fast_exp(0).
    img = x.detach().reshape(n * c, height, width).to(work_dtype)
    padded = img.index_select(1, _reflect_index(height, pad, x.device))
    padded = padded.index_select(2, _reflect_index(width, pad, x.device))  # (B, H + 2 pad, ...)
    ref = padded[:, r0 : r0 + win.reg_h, r0 : r0 + win.reg_w]

    center_weight = _center_weight(work_dtype)
    center = padded[:, pad : pad + height, pad : pad + width]
    num = center * center_weight
    den = torch.full_like(num, center_weight)

    shifts = [(dr, dc) for dr in range(0, d + 1) for dc in range(-d, d + 1) if dr > 0 or dc > 0]
    per_shift = n * c * win.reg_h * win.reg_w
    chunk = max(1, min(len(shifts), chunk_elements(x.device) // max(per_shift, 1)))
    for start in range(0, len(shifts), chunk):
        part = shifts[start : start + chunk]
        moved = torch.stack(
            [
                padded[:, r0 + dr : r0 + dr + win.reg_h, r0 + dc : r0 + dc + win.reg_w]
                for dr, dc in part
            ],
            dim=1,
        )  # (B, K, reg_h, reg_w): the region shifted by each u
        weight = _shift_weights(moved, ref, win, var2, h2s2)
        _accumulate(num, den, padded, moved, weight, part, win)
    out = num / den
    return out.reshape(n, c, height, width).to(x.dtype)
