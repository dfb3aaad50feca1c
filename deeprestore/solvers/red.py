"""RED without a network (Romano, Elad, Milanfar 2017), H = I or any linear H."""

from __future__ import annotations

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.schedule import DenoiserSchedule


class REDAlgorithm(Algorithm):
    """RED without a network (Romano et al.): minimise ``½‖Hx − y‖² + λ/2 xᵀ(x − f(x))``.

    Fixed-point iterations: ``(HᵀH + λI) x_{k+1} = Hᵀy + λ f(x_k)``. For H = I this is the closed
    form ``x = (y + λ f(x)) / (1 + λ)``; otherwise the linear system is solved by
    ``cg_steps`` conjugate-gradient steps warm-started at x_k (HᵀH + λI is symmetric positive
    definite, so CG converges; it needs only H and Hᵀ, no inverse).
    """

    def __init__(self, problem: Problem, settings: Settings, denoiser: Denoiser) -> None:
        self.problem = problem
        self.settings = settings
        self.total = settings.iterations
        self.denoiser = denoiser
        self.denoiser_name = denoiser.name
        self.sigma_f = settings.sigma_f if settings.sigma_f is not None else problem.sigma
        #: f's calls, as the network methods make them (one sync call per iteration here)
        self.schedule = DenoiserSchedule(denoiser, self.sigma_f)
        self.x = problem.x_init.clone()
        self.identity = isinstance(problem.operator, Identity)  # closed form, no CG
        self.hty = problem.operator.adjoint(problem.y)

    def _normal(self, v: torch.Tensor) -> torch.Tensor:
        op = self.problem.operator
        return op.adjoint(op.forward(v)) + self.settings.lam * v

    def _solve(self, rhs: torch.Tensor) -> torch.Tensor:
        x = self.x.clone()
        r = rhs - self._normal(x)
        p = r.clone()
        rr = torch.sum(r * r)
        for _ in range(self.settings.cg_steps):
            ap = self._normal(p)
            alpha = rr / torch.sum(p * ap).clamp_min(1e-30)
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = torch.sum(r * r)
            p = r + (rr_new / rr.clamp_min(1e-30)) * p
            rr = rr_new
        return x

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.iteration += 1
        lam = self.settings.lam
        denoised = self.schedule.call(self.x)
        rhs = self.hty + lam * denoised
        self.x = rhs / (1.0 + lam) if self.identity else self._solve(rhs)
        if self.settings.clip_x:
            self.x = self.x.clamp(0.0, 1.0)
        residual = self.problem.operator.forward(self.x) - self.problem.y
        prior = torch.sum(self.x * (self.x - denoised))
        loss = (0.5 * residual.pow(2).sum() + 0.5 * lam * prior) / float(self.x.numel())
        return loss, None

    @property
    def denoiser_calls(self) -> int:  # type: ignore[override]
        """How often f ran (the schedule counts)."""
        return self.schedule.calls

    def estimate(self) -> torch.Tensor:
        return self.x
