"""The Python API: ``deeprestore.restore(image, task=..., method=...)`` on numpy arrays.

It takes the same road as the command line below the parsing: the task's preset (Table 1's row
unless ``preset`` names another), the user's settings on top (:mod:`deeprestore.config.resolve`),
the task's :class:`~deeprestore.solvers.base.Problem` (:mod:`deeprestore.tasks`) and the engine.
It writes no file. Errors are the command line's: :class:`~deeprestore.arrays.ImageError`
(the array), :class:`~deeprestore.tasks.registry.TaskError` (task options, unknown task or method),
:class:`~deeprestore.config.presets.PresetError` and
:class:`~deeprestore.config.settings.SettingsError` (a bad preset or setting), each with a
one-line message.

Example::

    import deeprestore
    restored = deeprestore.restore(noisy, task="denoise", method="deepred", sigma=25,
                                   iterations=300, seed=0)
    restored.image      # same shape and dtype as ``noisy``
    restored.log[-1]    # the last logged iteration: loss, PSNR (with a reference), ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from deeprestore.huge_pages import request_huge_pages
from deeprestore.tasks.registry import DENOISE, INPAINT

#: the task whose preset a method runs with through a user's operator when no task is named
#: (else denoising's). The denoising preset grows DeepRED's λ and µ by a rule of the authors'
#: denoising code that assumes H = I: through a 3×3 blur and a 50 % mask DeepRED reached
#: 19.5 dB with it and 30.5 with the inpainting preset's fixed λ, µ (DIP: 30.0 with its
#: denoising rules, which read nothing of H; docs/extending.md)
OPERATOR_TASKS = {"deepred": INPAINT, "red": INPAINT}

if TYPE_CHECKING:
    from deeprestore.config.resolve import SettingsResolver
    from deeprestore.config.settings import Settings
    from deeprestore.denoisers import Denoiser
    from deeprestore.execution import Execution
    from deeprestore.solvers.base import Problem, ProgressCallback, Result


@dataclass
class Restoration:
    """What :func:`restore` returns.

    ``image``: the restored image, the input's layout (H×W, H×W×1 or H×W×C) and dtype (uint8
    and uint16 on their full range, floats in [0, 1]); for ``superres`` ``factor`` times larger.
    ``log``: the logged iterations (:class:`~deeprestore.solvers.base.LogRow`: loss, PSNR against
    ``reference`` in dB or None, gap, seconds, ...). ``settings``: every parameter the run used;
    ``preset``: the preset they came from; ``psnr``: the final PSNR in dB (with a reference,
    under the paper's protocol for the task), else None; ``denoiser_calls``: how often f ran;
    ``sigma``: the noise std the run assumed (0–255 scale; estimated when it was ``"auto"``);
    ``stop``: with ``stop="auto"``, where the run stopped and why (``stopped_at``,
    ``detected_at``, ``reason``), else None; ``precision``: with ``precision="auto"`` (the
    default for denoising), what it chose and the step times it measured (``used``,
    ``bf16_speedup``, ...; ``settings.precision`` is the one used), else None.
    """

    image: np.ndarray
    log: list[Any]
    settings: Any
    preset: str
    psnr: float | None
    iterations: int
    denoiser_calls: int
    sigma: float
    stop: dict[str, Any] | None = None
    precision: dict[str, Any] | None = None


def restore(
    image: np.ndarray,
    task: str | None = None,
    method: str = "deepred",
    *,
    sigma: float | str | None = None,
    kernel: str | None = None,
    factor: int | None = None,
    downsampler: str | None = None,
    mask: str | np.ndarray | None = None,
    reference: np.ndarray | None = None,
    preset: str | None = None,
    denoiser: Any = "auto",
    device: str = "cpu",
    callback: Any = None,
    execution: Any = None,
    operator: Any = None,
    shape: Any = None,
    x0: Any = None,
    **settings: Any,
) -> Restoration:
    """Restore one image given as a numpy array, or from measurements through an operator of
    one's own (``operator=``).

    Parameters
    ----------
    image : ndarray
        The degraded image, H×W (grey) or H×W×C (C = 1, 3 or 4; alpha is kept), uint8, uint16
        or float in [0, 1]. For ``superres`` the low-resolution image.
    task : str, optional
        ``denoise`` (the default for an image), ``deblur``, ``superres`` or ``inpaint``. With
        ``operator=`` it only picks the preset; when none is named DeepRED and RED take the
        ``inpaint`` preset's rules, made for a general H, and DIP and DIP-TV the ``denoise``
        preset's (:data:`OPERATOR_TASKS`).
    method : str
        ``deepred``, ``dip``, ``dip-tv``, ``red`` or one of the task's baselines (``nlm``,
        ``bm3d``, ``wiener``, ``bicubic``, ``biharmonic``).
    sigma : float or "auto", optional
        Noise std of ``image`` on the 0–255 scale; ``"auto"``: estimated from ``image``
        (:func:`deeprestore.physics.noise.estimate_noise_sigma`). Default: ``"auto"`` for denoise,
        else the preset's, else the task's.
    kernel : str, optional
        deblur: ``uniform9``, ``gauss25`` or a kernel file.
    factor, downsampler : optional
        superres: 2, 4 or 8; ``lanczos2`` (default) or ``bicubic``.
    mask : str or ndarray, optional
        inpaint: H×W array (nonzero = known pixel) or a mask image file; required.
    reference : ndarray, optional
        The clean image (the high-resolution one for superres), to log PSNR.
    preset : str, optional
        A preset name or TOML path (default: the task's Table 1 row).
    denoiser : str, Denoiser, torch.nn.Module or callable
        f(x) for deepred/red: ``auto`` (the preset's; its torch version on CUDA), a registered
        name, or one's own: a :class:`~deeprestore.denoisers.Denoiser`, a module or a function
        ``f(x, sigma)`` (x (N, C, H, W) in [0, 1], sigma on the 0–255 scale), always called
        under ``torch.no_grad()`` (its parameters are not trained).
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    callback : callable, optional
        Called with a :class:`~deeprestore.solvers.base.Progress` every ``log_every`` iterations.
    execution : Execution, optional
        How the network steps run (:class:`~deeprestore.execution.Execution`).
    operator : LinearOperator or object with ``A``/``A_adjoint``, optional
        H of one's own (:func:`deeprestore.physics.adjoint.as_operator`;
        ``deeprestore.LinearOperator.from_functions(forward, adjoint)``). ``image`` is then the
        measurements y (a tensor (N, C, H', W') or (C, H', W'), or an (H', W'[, C]) array),
        ``task`` only picks the preset (unless ``preset`` is given) and its task options
        (``kernel``, ``factor``, ``mask``) are not used. H is checked first
        (:func:`~deeprestore.physics.adjoint.check_adjoint`): a wrong adjoint or a non-linear H
        raises :class:`~deeprestore.user_problem.OperatorError` (one line). ``sigma``: y's noise
        std on the 0–255 scale (default 0; not ``"auto"``). The image comes back as a float
        array (H, W, C), or (H, W) for one channel.
    shape : sequence of int, optional
        With ``operator``: the image's shape (N, C, H, W) when H changes it (default: y's).
    x0 : array or tensor, optional
        With ``operator``: where x starts (default: Hᵀy, scaled to best match y, clipped).
    **settings
        Any :class:`~deeprestore.config.settings.Settings` field (``iterations=300``, ``seed=1``,
        ``lam=0.3``, ...), over the preset's values. As on the command line, without
        ``iterations`` or ``stop`` a network method stops by itself (``stop="auto"``, the
        preset's count as the ceiling; :func:`deeprestore.config.resolve.everyday_defaults`),
        denoising runs ``precision="auto"`` (bf16 where it measures ≥ 1.25× faster; the other
        tasks float32), and the preset's ``[everyday]`` table applies (denoising: a 32-channel
        network; ``net_channels=128`` for the paper's;
        :class:`deeprestore.config.resolve.SettingsResolver`).

    Returns
    -------
    Restoration
        The restored image (the input's layout and dtype) and the log.
    """
    request_huge_pages()  # before torch's first CPU allocation (deeprestore.huge_pages)
    from deeprestore.arrays import from_array, to_array
    from deeprestore.io.images import check_min_side
    from deeprestore.tasks.options import TaskOptions, check_task_options
    from deeprestore.tasks.problem import build_problem

    own_denoiser = None
    if not isinstance(denoiser, str):
        from deeprestore.user_problem import as_denoiser

        own_denoiser, denoiser = as_denoiser(denoiser), "auto"
    if task is None:  # denoising for an image; through an operator, rules made for any H
        task = (OPERATOR_TASKS.get(method, DENOISE).name if operator is not None
                else DENOISE.name)
    run = _Run(task=task, method=method, preset=preset, settings=settings, denoiser=denoiser,
               own_denoiser=own_denoiser, device=device, callback=callback, execution=execution)
    if operator is not None:
        return _restore_through(image, operator, run, sigma=sigma, reference=reference,
                                shape=shape, x0=x0)
    observed = from_array(image, "image")
    check_min_side(observed, "image")
    clean = None if reference is None else from_array(reference, "reference")
    flags = TaskOptions(task, sigma=sigma, kernel=kernel, factor=factor,
                        downsampler=downsampler, mask=mask)  # type: ignore[arg-type]
    resolver = run.resolver()
    check_task_options(flags)
    found, chosen, options = resolver.resolve(flags, preset)
    task_problem = build_problem(options, observed, clean)
    result = run.solve(task_problem.problem, chosen, baselines=task_problem.baselines,
                       denoiser=own_denoiser or task_problem.denoiser_for(chosen))
    return _restoration(_like_input(to_array(result.image), np.asarray(image), observed.alpha),
                        result, task_problem.problem, chosen, found.name)


def _restoration(image: np.ndarray, result: Any, problem: Any, chosen: Any,
                 preset: str) -> Restoration:
    """The :class:`Restoration` of a run: ``image`` already in the caller's layout, the PSNR
    against the problem's reference (if any), the settings with the precision used."""
    psnr = None
    if problem.reference is not None and problem.psnr is not None:
        psnr = float(problem.psnr(result.image, problem.reference.cpu()))
    if result.precision is not None:
        chosen = replace(chosen, precision=result.precision["used"])
    return Restoration(image=image, log=result.log, settings=chosen, preset=preset, psnr=psnr,
                       iterations=result.iterations, denoiser_calls=result.denoiser_calls,
                       sigma=problem.sigma, stop=result.stop, precision=result.precision)


@dataclass(frozen=True)
class _Run:
    """What :func:`restore` runs with, on either road (the task's problem or the caller's
    operator): the task and method, where the settings come from (``preset``, the caller's
    ``settings`` over it), f (a registered name or ``auto``, or the caller's own), the device
    and the engine's hooks."""

    task: str
    method: str
    preset: str | None
    settings: dict[str, Any]
    denoiser: str
    own_denoiser: Denoiser | None
    device: str
    callback: ProgressCallback | None
    execution: Execution | None

    def resolver(self) -> SettingsResolver:
        """The settings of :attr:`method` for :attr:`task`, as a restore command resolves them
        (``everyday`` defaults included)."""
        import torch

        from deeprestore.config.resolve import SettingsResolver

        return SettingsResolver(self.task, self.method, self.settings, self.denoiser,
                                torch.device(self.device), everyday=True)

    def solve(self, problem: Problem, chosen: Settings, *, denoiser: Denoiser | None,
              baselines: dict[str, Callable[[Problem], Any]] | None = None) -> Result:
        """Run the engine on ``problem`` with the ``chosen`` settings and f ``denoiser``."""
        from deeprestore.execution import DEFAULT_EXECUTION
        from deeprestore.solvers.runner import restore as run_solver

        return run_solver(problem, chosen, device=self.device, callback=self.callback,
                          baselines=baselines, denoiser=denoiser,
                          execution=self.execution or DEFAULT_EXECUTION)


def _restore_through(y: Any, operator: Any, run: _Run, *, sigma: Any, reference: Any,
                     shape: Any, x0: Any) -> Restoration:
    """:func:`restore` with ``operator=``: the user's H, y and (optionally) f."""
    from deeprestore.config.resolve import default_preset
    from deeprestore.methods import ITERATIVE_METHODS
    from deeprestore.tasks.options import TaskOptions
    from deeprestore.tasks.registry import TaskError
    from deeprestore.user_problem import user_problem

    if run.method not in ITERATIVE_METHODS:
        raise TaskError(f"method {run.method!r} needs a task's own operator; with operator= "
                        "use deepred, dip, dip-tv or red")
    if isinstance(sigma, str):
        raise TaskError("sigma='auto' estimates noise in an image, not in measurements through "
                        "an operator: give sigma (0–255 scale)")
    found, chosen = run.resolver().settings(run.preset or default_preset(TaskOptions(run.task)))
    problem = user_problem(y, operator, shape=shape, x0=x0, sigma=float(sigma or 0.0),
                           reference=reference, device=run.device)
    result = run.solve(problem, chosen, denoiser=run.own_denoiser)
    pixels = result.image[0].permute(1, 2, 0).double().numpy()
    return _restoration(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, result, problem,
                        chosen, found.name)


def _like_input(pixels: np.ndarray, original: np.ndarray, alpha: np.ndarray | None
                ) -> np.ndarray:
    """(H, W, C) float64 in [0, 1] → the layout and dtype of ``original`` (alpha put back when
    the size is kept)."""
    if alpha is not None and alpha.shape == pixels.shape[:2]:
        pixels = np.concatenate([pixels, alpha[:, :, None]], axis=2)
    if original.ndim == 2:
        pixels = pixels[:, :, 0]
    dtype = original.dtype
    if dtype in (np.uint8, np.uint16):
        scale = float(np.iinfo(dtype).max)
        return np.round(np.clip(pixels, 0.0, 1.0) * scale).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return pixels.astype(dtype)
    return pixels
