"""What every method shares: the problem, the log, the result and the Algorithm base class.

Following SigPy's split, an *algorithm* does one iteration per :meth:`Algorithm.update` and says
when it is :meth:`~Algorithm.done`; :class:`~deeprestore.solvers.runner.Runner` drives it.
Tensors are (N, C, H, W) floats in [0, 1] on the solver's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from deeprestore.physics.operators import LinearOperator


@dataclass
class Problem:
    """What is to be restored.

    ``y``: observation (1, C, h, w) in [0, 1]; ``operator``: H, mapping (1, C, H, W) to y's
    shape; ``x_init``: the starting point for x (1, C, H, W) (``y`` itself when H keeps the
    size); ``sigma``: the noise std of y on the 0–255 scale (used by baselines that need it);
    ``reference``: the clean image (1, C, H, W) for PSNR, if known; ``psnr``: the PSNR protocol.
    """

    y: torch.Tensor
    operator: LinearOperator
    x_init: torch.Tensor
    sigma: float = 0.0
    reference: torch.Tensor | None = None
    psnr: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @property
    def channels(self) -> int:
        return int(self.x_init.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x_init.shape[-2]), int(self.x_init.shape[-1])


@dataclass
class LogRow:
    """One logged iteration: loss of the Θ-step (or RED objective), PSNR of the current estimate
    against the reference (None without one), ‖x − T_Θ(z)‖ RMS per pixel (None when no x),
    wall seconds since the start, the age in iterations of the denoised image in use, and the
    λ and µ in use (DeepRED; they change under the growth rule, ``grow_step``)."""

    iteration: int
    loss: float
    psnr: float | None
    gap: float | None
    seconds: float
    denoiser_age: int | None = None
    lam: float | None = None
    mu: float | None = None
    #: the automatic stop's signal (``stop = "auto"``): the moving variance of the outputs
    stop_signal: float | None = None


@dataclass
class Progress:
    """What the engine reports to its callback every ``log_every`` iterations."""

    iteration: int
    total: int
    loss: float
    psnr: float | None
    seconds: float


@dataclass
class Result:
    """The restored image (1, C, H, W) on the CPU, the log and a few counters."""

    image: torch.Tensor
    log: list[LogRow]
    iterations: int
    seconds: float
    denoiser_calls: int = 0
    denoiser: str | None = None
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    backtracks: list[dict[str, Any]] = field(default_factory=list)
    #: the automatic stop's report (``stop = "auto"``): stopped_at, detected_at, reason
    stop: dict[str, Any] | None = None
    #: how ``precision = "auto"`` was resolved, when the run resolved it
    #: (:meth:`deeprestore.solvers.precision.PrecisionChoice.record`)
    precision: dict[str, Any] | None = None


ProgressCallback = Callable[[Progress], None]


class Algorithm:
    """One iterative method. ``update()`` does one iteration and returns device tensors
    ``(loss, gap)``; ``estimate()`` is the current restored image (1, C, H, W)."""

    total: int = 1
    iteration: int = 0
    denoiser_calls: int = 0
    denoiser_name: str | None = None

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def estimate(self) -> torch.Tensor:
        raise NotImplementedError

    def done(self) -> bool:
        return self.iteration >= self.total

    def denoiser_age(self) -> int | None:
        return None

    def network_output(self) -> torch.Tensor | None:
        """The latest T_Θ(z) (1, C, H, W), averaged over runs; None for methods without one."""
        return None

    def weights(self) -> tuple[float | None, float | None]:
        """The λ and µ in use (None where the method has none)."""
        return None, None

    def backtrack_events(self) -> list[dict[str, Any]]:
        """The backtracks so far (``backtrack_drop``): iteration, run, PSNRs."""
        return []

    def close(self) -> None:
        """Release background resources (nothing by default)."""

    #: whether :meth:`state_dict` / :meth:`load_state_dict` work (checkpoints and rollback)
    stateful = False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from the current iteration (copies)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        raise NotImplementedError

    def scale_learning_rate(self, factor: float) -> float:
        """Multiply the learning rate by ``factor``; return the new rate."""
        raise NotImplementedError


def problem_to_device(problem: Problem, device: torch.device) -> Problem:
    """The same problem with its tensors (float32) on ``device`` (operators make their own
    tensors on the device of what they are applied to)."""

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=torch.float32)

    moved_y = move(problem.y)
    moved_x = move(problem.x_init)
    assert moved_y is not None and moved_x is not None
    return Problem(
        y=moved_y,
        operator=problem.operator,
        x_init=moved_x,
        sigma=problem.sigma,
        reference=move(problem.reference),
        psnr=problem.psnr,
    )
