"""The paper's update equations as pure functions of (N, C, H, W) tensors (REFERENCE.md §1)."""

from __future__ import annotations

import torch


def total_variation(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Isotropic total variation Σ sqrt(|∂h x|² + |∂v x|²) of (N, C, H, W), per channel, summed.

    Forward differences; the last row/column has no difference across the border.
    """
    dh = torch.zeros_like(x)
    dv = torch.zeros_like(x)
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return torch.sqrt(dh**2 + dv**2 + eps).sum()


def fixed_point_update(
    denoised: torch.Tensor, out: torch.Tensor, u: torch.Tensor, lam: float, mu: float
) -> torch.Tensor:
    """Eq. 11: ``x = (λ f(x) + µ (T_Θ(z) + u)) / (λ + µ)``. All tensors (N, C, H, W)."""
    return (lam * denoised + mu * (out + u)) / (lam + mu)


def steepest_descent_update(
    x: torch.Tensor,
    denoised: torch.Tensor,
    out: torch.Tensor,
    u: torch.Tensor,
    lam: float,
    mu: float,
    step: float,
) -> torch.Tensor:
    """Eq. 12: ``x − c [λ (x − f(x)) + µ (x − T_Θ(z) − u)]`` with step ``c``."""
    return x - step * (lam * (x - denoised) + mu * (x - out - u))


def dual_update(u: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The scaled dual (Lagrange multiplier) update ``u ← u − x + T_Θ(z)``."""
    return u - x + out
