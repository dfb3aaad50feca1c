"""A problem of the user's own: their operator H, their measurements y, their denoiser f.

:func:`user_problem` checks the operator (:func:`~deeprestore.physics.adjoint.check_adjoint`:
a wrong adjoint or a non-linear ``A`` is refused in one line, :class:`OperatorError`) and makes
the engine's :class:`~deeprestore.solvers.base.Problem`; :func:`as_denoiser` turns a name, a
function ``f(x, sigma)`` or a ``torch.nn.Module`` into a
:class:`~deeprestore.denoisers.Denoiser` (called under ``torch.no_grad()``: its parameters are
never trained). :func:`deeprestore.restore` uses both when given ``operator=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from deeprestore.denoisers import Denoiser, get_denoiser
from deeprestore.metrics import psnr_rgb
from deeprestore.physics.adjoint import as_operator, check_adjoint
from deeprestore.solvers.base import Problem


class OperatorError(ValueError):
    """A user operator that cannot be used (wrong adjoint, not linear, shapes); one line."""


def as_denoiser(denoiser: Any) -> Denoiser:
    """A :class:`Denoiser` from a registered name, a :class:`Denoiser`, a ``torch.nn.Module``
    or any function ``f(x, sigma)`` (x: (N, C, H, W) in [0, 1]; sigma on the 0–255 scale)."""
    if isinstance(denoiser, Denoiser):
        return denoiser
    if isinstance(denoiser, str):
        return get_denoiser(denoiser)
    if callable(denoiser):
        name = (type(denoiser).__name__ if isinstance(denoiser, torch.nn.Module)
                else getattr(denoiser, "__name__", type(denoiser).__name__))
        return Denoiser(name, denoiser, "any", f"the user's {name}")
    raise TypeError(f"a denoiser is a name, a Denoiser, a torch.nn.Module or a function "
                    f"f(x, sigma); got {type(denoiser).__name__}")


def measurements(values: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """``values`` as float32 (N, C, H, W) on ``device``: a tensor of 4 dimensions as it is,
    (C, H, W) or a numpy (H, W) / (H, W, C) array (an image's layout) with the batch (and
    channel) added."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach().float().to(device)
        if tensor.ndim == 3:
            tensor = tensor[None]
    else:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise OperatorError(f"measurements: expected (H, W) or (H, W, C), got shape "
                                f"{array.shape}")
        tensor = torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)).to(device)[None]
    if tensor.ndim != 4:
        raise OperatorError(f"measurements: expected (N, C, H, W), got shape "
                            f"{tuple(tensor.shape)}")
    return tensor


def user_problem(y: Any, operator: Any, *, shape: Sequence[int] | None = None,
                 x0: Any = None, sigma: float = 0.0, reference: Any = None,
                 device: torch.device | str = "cpu") -> Problem:
    """The engine's problem for measurements ``y`` = H x + noise, H = ``operator`` (a
    :class:`~deeprestore.physics.operators.LinearOperator` or anything with ``A`` and
    ``A_adjoint``).

    ``shape``: the image's (N, C, H, W) — needed when H changes the shape (default: ``y``'s);
    ``x0``: the start of x (default: Hᵀy scaled by the least-squares factor that best matches
    H Hᵀy to y, clipped to [0, 1]); ``sigma``: noise std of y on the 0–255 scale;
    ``reference``: the clean image, for PSNR in the log. Raises :class:`OperatorError` when the
    adjoint check fails (the message names the error) or the shapes disagree."""
    op = as_operator(operator)
    y_tensor = measurements(y, device)
    image_shape = tuple(int(v) for v in (shape if shape is not None else y_tensor.shape))
    if len(image_shape) == 3:
        image_shape = (1, *image_shape)
    if len(image_shape) != 4:
        raise OperatorError(f"shape: expected (N, C, H, W), got {image_shape}")
    try:
        report = check_adjoint(op, image_shape, device=device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise OperatorError(f"the operator failed on an input of shape {image_shape}: "
                            f"{str(err).splitlines()[0]}") from None
    problem = report.problem()
    if problem is not None:
        raise OperatorError(problem)
    if report.output_shape != tuple(y_tensor.shape):
        raise OperatorError(f"the operator maps {image_shape} to {report.output_shape}, but y "
                            f"has shape {tuple(y_tensor.shape)} (give the image's shape=)")
    if x0 is None:
        with torch.no_grad():
            back = op.adjoint(y_tensor)
            forward = op.forward(back)
            scale = float((forward * y_tensor).sum()) / max(float(forward.pow(2).sum()), 1e-12)
            start = (scale * back).clamp(0.0, 1.0)
    else:
        start = measurements(x0, device)
        if tuple(start.shape) != image_shape:
            raise OperatorError(f"x0 has shape {tuple(start.shape)}, the image {image_shape}")
    clean = None if reference is None else measurements(reference, device)
    return Problem(y_tensor, op, start, float(sigma), clean, psnr_rgb)
