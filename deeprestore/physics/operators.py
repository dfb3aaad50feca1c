"""Degradation operators ``H`` as linear operators on image tensors.

Every operator maps a tensor laid out ``(N, C, H, W)`` (batch, channels, height, width; pixel
values in whatever units the caller uses, typically [0, 1]) to another ``(N, C, H', W')`` tensor
on the same device and with the same dtype. ``forward`` applies ``H`` and ``adjoint`` applies its
exact adjoint ``Hᵀ`` (so that ``<H x, y> = <x, Hᵀ y>``). Both are built from differentiable torch
operations, so gradients flow through them with autograd.

Operators compose with ``@``: ``(A @ B)(x) == A(B(x))`` (``B`` is applied first).

This module knows nothing about networks or restoration tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from deeprestore.physics.kernels import (
    DEFAULT_DOWNSAMPLER,
    check_sr_factor,
    downsampling_kernel,
)

__all__ = [
    "LinearOperator",
    "Identity",
    "Blur",
    "Downsample",
    "Mask",
    "Compose",
]

Hw = tuple[int, int]


def _check_4d(x: torch.Tensor, who: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{who}: expected a tensor laid out (N, C, H, W), got shape {tuple(x.shape)}"
        )


class LinearOperator:
    """Base class of a linear operator ``H`` acting on ``(N, C, H, W)`` tensors.

    Subclasses implement :meth:`forward`, :meth:`adjoint`, :meth:`output_shape` and, where the
    spatial size can be inverted, :meth:`input_shape`. ``op(x)`` is ``op.forward(x)`` and
    ``A @ B`` is the composition ``A∘B`` (``B`` first).
    """

    name: str = "linear_operator"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``H`` to ``x`` of shape (N, C, H, W)."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint ``Hᵀ`` to ``y`` of shape (N, C, H', W')."""
        raise NotImplementedError

    def output_shape(self, input_hw: Hw) -> Hw:
        """Spatial size (height, width) in pixels of ``H x`` for ``x`` of spatial size input_hw."""
        raise NotImplementedError

    def input_shape(self, output_hw: Hw) -> Hw:
        """Spatial size (height, width) of ``x`` such that ``H x`` has spatial size output_hw."""
        raise NotImplementedError(f"{self.name}: input_shape is not defined")

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the operator, for run manifests."""
        return {"name": self.name}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @staticmethod
    def from_functions(forward: Callable[[torch.Tensor], torch.Tensor],
                       adjoint: Callable[[torch.Tensor], torch.Tensor], *,
                       output_shape: Callable[[Hw], Hw] | None = None,
                       name: str = "user_operator") -> LinearOperator:
        """An operator from two callables on (N, C, H, W) tensors, H x and Hᵀ y
        (:class:`~deeprestore.physics.adjoint.FunctionOperator`); check it with
        :func:`~deeprestore.physics.adjoint.check_adjoint`."""
        from deeprestore.physics.adjoint import FunctionOperator

        return FunctionOperator(forward, adjoint, output_shape=output_shape, name=name)

    def __matmul__(self, other: LinearOperator) -> Compose:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Compose(self, other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class Identity(LinearOperator):
    """The identity ``H = I`` (denoising). Forward and adjoint return ``x`` unchanged."""

    name = "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` (N, C, H, W) unchanged."""
        _check_4d(x, "Identity")
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Return ``y`` (N, C, H, W) unchanged."""
        _check_4d(y, "Identity")
        return y

    def output_shape(self, input_hw: Hw) -> Hw:
        """Same spatial size."""
        return (int(input_hw[0]), int(input_hw[1]))

    def input_shape(self, output_hw: Hw) -> Hw:
        """Same spatial size."""
        return (int(output_hw[0]), int(output_hw[1]))


def _as_kernel_array(kernel: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(kernel, torch.Tensor):
        k = kernel.detach().cpu().to(torch.float64).numpy()
    else:
        k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"blur kernel must be a non-empty 2-D array (kh, kw), got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError("blur kernel has non-finite entries")
    return k


class Blur(LinearOperator):
    """Circular (periodic) convolution with a fixed kernel, computed with the FFT.

    ``kernel``: (kh, kw) array or tensor; it is used as given (not renormalised). Its entry at
    index (kh//2, kw//2) is the zero shift, so a delta kernel at that index is exactly the
    identity; ``y[i, j] = sum_{a,b} k[a, b] x[(i - a + kh//2) mod H, (j - b + kw//2) mod W]``.
    The adjoint is the circular correlation (conjugate transfer function). Works on
    (N, C, H, W) tensors with H >= kh and W >= kw; output has the same shape.
    """

    name = "blur"

    def __init__(self, kernel: torch.Tensor | np.ndarray, label: str | None = None) -> None:
        self.kernel = _as_kernel_array(kernel)
        self.label = label
        self._cache: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}

    def _transfer(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        kh, kw = self.kernel.shape
        if kh > h or kw > w:
            raise ValueError(
                f"blur kernel is {kh}x{kw} but the image is only {h}x{w}; "
                "the kernel must not be larger than the image"
            )
        key = (h, w, str(device), dtype)
        tf = self._cache.get(key)
        if tf is None:
            padded = np.zeros((h, w), dtype=np.float64)
            padded[:kh, :kw] = self.kernel
            padded = np.roll(padded, shift=(-(kh // 2), -(kw // 2)), axis=(0, 1))
            kt = torch.from_numpy(padded).to(device=device, dtype=dtype)
            tf = torch.fft.rfft2(kt)
            self._cache[key] = tf
        return tf

    def _apply(self, x: torch.Tensor, conj: bool) -> torch.Tensor:
        _check_4d(x, "Blur")
        if not x.is_floating_point():
            raise TypeError(f"Blur: expected a floating-point tensor, got {x.dtype}")
        h, w = x.shape[-2:]
        tf = self._transfer(h, w, x.device, x.dtype)
        if conj:
            tf = tf.conj()
        return torch.fft.irfft2(torch.fft.rfft2(x) * tf, s=(h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Circular convolution of every (H, W) plane of ``x`` (N, C, H, W) with the kernel."""
        return self._apply(x, conj=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Circular correlation of every plane of ``y`` (N, C, H, W) with the kernel."""
        return self._apply(y, conj=True)

    def output_shape(self, input_hw: Hw) -> Hw:
        """Same spatial size."""
        return (int(input_hw[0]), int(input_hw[1]))

    def input_shape(self, output_hw: Hw) -> Hw:
        """Same spatial size."""
        return (int(output_hw[0]), int(output_hw[1]))

    def describe(self) -> dict[str, Any]:
        """Name, optional label, kernel shape and sum, boundary convention."""
        d: dict[str, Any] = {
            "name": self.name,
            "kernel_shape": [int(s) for s in self.kernel.shape],
            "kernel_sum": float(self.kernel.sum()),
            "boundary": "circular",
        }
        if self.label is not None:
            d["label"] = self.label
        return d


# --------------------------------------------------------------------------------------------
# Downsampling
# --------------------------------------------------------------------------------------------


class Downsample(LinearOperator):
    """Downsampling by ``factor`` (2, 4 or 8): replicate padding, fixed filter, stride ``factor``.

    ``kind="lanczos2"`` is the DIP authors' SR model ``Downsampler(kernel_type='lanczos2',
    phase=0.5, preserve_size=True)``: a (4f × 4f) Lanczos-2 kernel (x4: 16×16, x8: 32×32),
    replicate padding of 3f/2 pixels per side, stride f. ``kind="bicubic"`` uses
    :func:`~deeprestore.physics.kernels.bicubic_kernel` with the same geometry (the kernels and
    the allowed factors live in :mod:`deeprestore.physics.kernels`). Input (N, C, H, W) with H
    and W divisible by ``factor``; output (N, C, H/f, W/f). The kernel is separable, so forward
    is ``M_h x M_wᵀ`` per channel with (n/f × n) matrices that fold the replicate padding in, and
    the adjoint is its exact transpose ``M_hᵀ y M_w``, in closed form (no autograd needed).
    """

    name = "downsample"

    def __init__(self, factor: int, kind: str = DEFAULT_DOWNSAMPLER) -> None:
        self.factor = check_sr_factor(factor)
        self.kernel = downsampling_kernel(self.factor, kind)
        self.kind = kind
        self.pad = (self.kernel.shape[0] - self.factor) // 2  # DIP: (kernel_size - factor) / 2
        self._mcache: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}

    def _matrix(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The 1-D operator along an axis of length ``n``: (n/f, n), replicate padding folded in.

        The kernel is separable (``outer(v, v) / sum``), so H x = M_h x M_wᵀ per channel; row i
        holds the taps of output i at their (clamped) source pixels.
        """
        key = (n, str(device), dtype)
        matrix = self._mcache.get(key)
        if matrix is None:
            taps = self.kernel.sum(axis=1)  # v / sum(v): the row sums of outer(v, v) / sum²
            f, size = self.factor, len(taps)
            dense = np.zeros((n // f, n))
            for i in range(n // f):
                sources = np.clip(np.arange(i * f - self.pad, i * f - self.pad + size), 0, n - 1)
                np.add.at(dense[i], sources, taps)
            matrix = torch.from_numpy(dense).to(device=device, dtype=dtype)
            self._mcache[key] = matrix
        return matrix

    def _check_hw(self, h: int, w: int) -> None:
        f = self.factor
        if h % f or w % f or h < f or w < f:
            raise ValueError(
                f"Downsample x{f}: the image is {h}x{w}, but both sides must be positive "
                f"multiples of {f} (crop it first)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H/f, W/f): replicate pad, separable filter, stride f, as two
        small matrix products ``M_h x M_wᵀ`` (faster than the equivalent strided depthwise
        convolution both ways: ``python bench/downsample.py``, docs/notes/cpu-design-choices.md)."""
        _check_4d(x, "Downsample")
        h, w = x.shape[-2:]
        self._check_hw(h, w)
        rows = self._matrix(h, x.device, x.dtype)
        cols = self._matrix(w, x.device, x.dtype)
        return torch.matmul(torch.matmul(rows, x.contiguous()), cols.t())

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C, h*f, w*f): exact transpose of :meth:`forward`, ``M_hᵀ y M_w``."""
        _check_4d(y, "Downsample")
        f = self.factor
        h, w = y.shape[-2] * f, y.shape[-1] * f
        rows = self._matrix(h, y.device, y.dtype)
        cols = self._matrix(w, y.device, y.dtype)
        return torch.matmul(torch.matmul(rows.t(), y.contiguous()), cols)

    def output_shape(self, input_hw: Hw) -> Hw:
        """(H, W) -> (H/f, W/f); H and W must be multiples of f."""
        h, w = int(input_hw[0]), int(input_hw[1])
        self._check_hw(h, w)
        return (h // self.factor, w // self.factor)

    def input_shape(self, output_hw: Hw) -> Hw:
        """(h, w) -> (h*f, w*f)."""
        return (int(output_hw[0]) * self.factor, int(output_hw[1]) * self.factor)

    def describe(self) -> dict[str, Any]:
        """Name, factor, kind, kernel size, padding."""
        return {
            "name": self.name,
            "factor": self.factor,
            "kind": self.kind,
            "kernel_shape": [int(s) for s in self.kernel.shape],
            "stride": self.factor,
            "padding": "replicate",
            "pad": self.pad,
        }


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


class Mask(LinearOperator):
    """Elementwise binary mask (inpainting): ``H x = x * m``, self-adjoint and idempotent.

    ``mask``: (H, W) (same for every channel) or (C, H, W) (per channel); 1 = known pixel,
    0 = missing. Values must be 0/1 (any numeric dtype) or bool. Inputs (N, C, H, W) must match
    the mask's spatial size (and channel count for a per-channel mask).
    """

    name = "mask"

    def __init__(self, mask: torch.Tensor | np.ndarray) -> None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if m.ndim not in (2, 3) or m.size == 0:
            raise ValueError(f"mask must be (H, W) or (C, H, W), got shape {m.shape}")
        if m.dtype != np.bool_ and not np.all((m == 0) | (m == 1)):
            bad = np.unique(m[(m != 0) & (m != 1)])[:5]
            raise ValueError(f"mask values must be 0 or 1 (or bool); found e.g. {bad.tolist()}")
        self.mask = m.astype(np.float64)
        self._cache: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    @property
    def hw(self) -> Hw:
        """Spatial size (H, W) of the mask."""
        return (int(self.mask.shape[-2]), int(self.mask.shape[-1]))

    def _m(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(x, "Mask")
        if tuple(x.shape[-2:]) != self.hw:
            raise ValueError(
                f"mask is {self.hw[0]}x{self.hw[1]} but the image is {x.shape[-2]}x{x.shape[-1]}"
            )
        if self.mask.ndim == 3 and self.mask.shape[0] != x.shape[1]:
            raise ValueError(
                f"per-channel mask has {self.mask.shape[0]} channels but the image has {x.shape[1]}"
            )
        key = (str(x.device), x.dtype)
        m = self._cache.get(key)
        if m is None:
            m = torch.from_numpy(self.mask).to(device=x.device, dtype=x.dtype)
            self._cache[key] = m
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * m`` for ``x`` (N, C, H, W)."""
        return x * self._m(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y * m`` (the mask is self-adjoint)."""
        return y * self._m(y)

    def output_shape(self, input_hw: Hw) -> Hw:
        """Same spatial size (must equal the mask's)."""
        return (int(input_hw[0]), int(input_hw[1]))

    def input_shape(self, output_hw: Hw) -> Hw:
        """Same spatial size."""
        return (int(output_hw[0]), int(output_hw[1]))

    def describe(self) -> dict[str, Any]:
        """Name, mask shape, fraction of known entries."""
        return {
            "name": self.name,
            "mask_shape": [int(s) for s in self.mask.shape],
            "known_fraction": float(self.mask.mean()),
        }


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


class Compose(LinearOperator):
    """Composition ``Compose(A, B, C) = A∘B∘C``: ``C`` is applied first, ``A`` last.

    The adjoint is ``Cᵀ∘Bᵀ∘Aᵀ``. Nested compositions are flattened. With no operators it is the
    identity.
    """

    name = "compose"

    def __init__(self, *ops: LinearOperator) -> None:
        flat: list[LinearOperator] = []
        for op in ops:
            if not isinstance(op, LinearOperator):
                got = type(op).__name__
                raise TypeError(f"Compose expects LinearOperator instances, got {got}")
            flat.extend(op.ops if isinstance(op, Compose) else [op])
        self.ops: tuple[LinearOperator, ...] = tuple(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operators right to left."""
        for op in reversed(self.ops):
            x = op.forward(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoints left to right."""
        for op in self.ops:
            y = op.adjoint(y)
        return y

    def output_shape(self, input_hw: Hw) -> Hw:
        """Chain of the operators' output shapes (right to left)."""
        hw = (int(input_hw[0]), int(input_hw[1]))
        for op in reversed(self.ops):
            hw = op.output_shape(hw)
        return hw

    def input_shape(self, output_hw: Hw) -> Hw:
        """Chain of the operators' input shapes (left to right)."""
        hw = (int(output_hw[0]), int(output_hw[1]))
        for op in self.ops:
            hw = op.input_shape(hw)
        return hw

    def describe(self) -> dict[str, Any]:
        """Name and the list of operator descriptions, outermost (applied last) first."""
        return {"name": self.name, "ops": [op.describe() for op in self.ops]}
