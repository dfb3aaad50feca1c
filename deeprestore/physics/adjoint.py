"""Whether an operator is linear and its adjoint is the adjoint: random dot-product tests.

Any object with ``forward``/``adjoint`` (a :class:`~deeprestore.physics.operators.LinearOperator`)
or ``A``/``A_adjoint`` (DeepInverse's ``LinearPhysics`` names; duck-typed, no dependency) can be
checked, and :class:`FunctionOperator` makes an operator from two callables. The methods need
``⟨H x, y⟩ = ⟨x, Hᵀ y⟩`` for every x, y: a wrong adjoint makes the network's gradient wrong
without any error, so a user's operator is checked before a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deeprestore.physics.operators import LinearOperator

#: the relative errors above which :func:`check_adjoint` reports a failure (float32 arithmetic)
TOLERANCE = 1e-4


class FunctionOperator(LinearOperator):
    """A linear operator from two callables on (N, C, H, W) tensors: ``forward(x)`` = H x and
    ``adjoint(y)`` = Hᵀ y; ``output_shape``: the (H', W') of ``H x`` for an (H, W) input, when
    it is not (H, W)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor],
                 adjoint: Callable[[torch.Tensor], torch.Tensor], *,
                 output_shape: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
                 name: str = "user_operator") -> None:
        self._forward, self._adjoint, self._output_shape = forward, adjoint, output_shape
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """H x for x of shape (N, C, H, W)."""
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Hᵀ y for y of shape (N, C', H', W')."""
        return self._adjoint(y)

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """(H', W') of H x: the callable given, else the input's."""
        if self._output_shape is None:
            return (int(input_hw[0]), int(input_hw[1]))
        height, width = self._output_shape(input_hw)
        return (int(height), int(width))


def as_operator(operator: Any) -> LinearOperator:
    """``operator`` as a :class:`LinearOperator`: itself, or one that calls its ``A`` and
    ``A_adjoint`` (DeepInverse's names). TypeError for anything else (one line)."""
    if isinstance(operator, LinearOperator):
        return operator
    if callable(getattr(operator, "A", None)) and callable(getattr(operator, "A_adjoint", None)):
        return FunctionOperator(operator.A, operator.A_adjoint, name=type(operator).__name__)
    raise TypeError(f"an operator needs forward/adjoint (a deeprestore.LinearOperator) or "
                    f"A/A_adjoint methods; got {type(operator).__name__}")


@dataclass(frozen=True)
class AdjointReport:
    """The largest relative errors of :func:`check_adjoint`'s trials: ``adjoint``:
    |⟨H x, y⟩ − ⟨x, Hᵀ y⟩| / (‖H x‖ ‖y‖); ``linearity``: ‖H(a x + b x') − a H x − b H x'‖ /
    (|a| ‖H x‖ + |b| ‖H x'‖); ``output_shape``: the shape of H x."""

    adjoint: float
    linearity: float
    output_shape: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Both errors within :data:`TOLERANCE`."""
        return self.adjoint <= TOLERANCE and self.linearity <= TOLERANCE

    def problem(self) -> str | None:
        """One line naming what failed, or None."""
        if self.linearity > TOLERANCE:
            return (f"the operator is not linear: H(a x + b x') differs from a H x + b H x' by "
                    f"{self.linearity:.2g} (relative)")
        if self.adjoint > TOLERANCE:
            return (f"the adjoint does not match the operator: ⟨H x, y⟩ and ⟨x, Hᵀ y⟩ differ by "
                    f"{self.adjoint:.2g} (relative; at most {TOLERANCE:g} expected)")
        return None


def check_adjoint(operator: Any, shape: Sequence[int], *, trials: int = 3, seed: int = 0,
                  device: torch.device | str = "cpu") -> AdjointReport:
    """Random dot-product and linearity tests of ``operator`` on inputs of ``shape``
    (N, C, H, W), float32 on ``device``, ``trials`` draws from ``seed``; returns the largest
    errors (:class:`AdjointReport`; ``report.ok``, ``report.problem()``)."""
    op = as_operator(operator)
    generator = torch.Generator().manual_seed(seed)

    def draw(size: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(size), generator=generator).to(device)

    worst_adjoint = worst_linear = 0.0
    out_shape: tuple[int, ...] = ()
    with torch.no_grad():
        for _ in range(trials):
            x, x2 = draw(shape), draw(shape)
            hx = op.forward(x)
            out_shape = tuple(hx.shape)
            y = draw(out_shape)
            hty = op.adjoint(y)
            if tuple(hty.shape) != tuple(shape):
                raise ValueError(f"the adjoint returned shape {tuple(hty.shape)} for an input "
                                 f"of shape {tuple(shape)}")
            left, right = float((hx * y).sum()), float((x * hty).sum())
            scale = float(hx.norm() * y.norm()) or 1.0
            worst_adjoint = max(worst_adjoint, abs(left - right) / scale)
            a, b = float(torch.randn(1, generator=generator)), float(
                torch.randn(1, generator=generator))
            hx2 = op.forward(x2)
            mixed = op.forward(a * x + b * x2) - (a * hx + b * hx2)
            size = abs(a) * float(hx.norm()) + abs(b) * float(hx2.norm()) or 1.0
            worst_linear = max(worst_linear, float(mixed.norm()) / size)
    return AdjointReport(worst_adjoint, worst_linear, out_shape)
