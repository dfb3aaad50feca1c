"""The Python API: ``deeprestore.restore(image, task=..., method=...)`` on numpy arrays.

It takes the same road as the command line below the parsing: the task's preset (Table 1's row
unless ``preset`` names another), the user's settings on top (:mod:`deeprestore.config.resolve`),
the
task's :class:`~deeprestore.solvers.base.Problem` (:mod:`deeprestore.tasks`) and the engine. It
writes
no file. Errors are the command line's: :class:`~deeprestore.io.images.ImageError` (the array),
:class:`~deeprestore.tasks.TaskError` (task options, unknown task or method),
:class:`~deeprestore.config.presets.PresetError` and
:class:`~deeprestore.config.settings.SettingsError`
(a bad preset or setting), each with a one-line message.

Example::

    import deeprestore
    restored = deeprestore.restore(noisy, task="denoise", method="deepred", sigma=25,
                                   iterations=300, seed=0)
    restored.image      # same shape and dtype as ``noisy``
    restored.log[-1]    # the last logged iteration: loss, PSNR (with a reference), ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from deeprestore.huge_pages import request_huge_pages


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
    task: str = "denoise",
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
    task : str
        ``denoise``, ``deblur``, ``superres`` or ``inpaint``.
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
    import torch

    from deeprestore.config.resolve import SettingsResolver
    from deeprestore.execution import DEFAULT_EXECUTION
    from deeprestore.io.images import MIN_SIDE, ImageError, from_array, to_array
    from deeprestore.solvers.runner import restore as run_solver
    from deeprestore.tasks import TaskOptions, build_problem, check_task_options

    own_denoiser = None
    if not isinstance(denoiser, str):
        from deeprestore.user_problem import as_denoiser

        own_denoiser, denoiser = as_denoiser(denoiser), "auto"
    if operator is not None:
        return _restore_through(image, operator, task=task, method=method, sigma=sigma,
                                reference=reference, preset=preset, denoiser=denoiser,
                                own_denoiser=own_denoiser, device=device, callback=callback,
                                execution=execution, shape=shape, x0=x0, settings=settings)
    observed = from_array(image, "image")
    if min(observed.height, observed.width) < MIN_SIDE:
        raise ImageError(f"image: {observed.width}×{observed.height} is too small (each side "
                         f"needs at least {MIN_SIDE} pixels)")
    clean = None if reference is None else from_array(reference, "reference")
    flags = TaskOptions(task, sigma=sigma, kernel=kernel, factor=factor,
                        downsampler=downsampler, mask=mask)  # type: ignore[arg-type]
    resolver = SettingsResolver(task, method, settings, denoiser, torch.device(device),
                                everyday=True)
    check_task_options(flags)
    found, chosen, options = resolver.resolve(flags, preset)
    task_problem = build_problem(options, observed, clean)
    result = run_solver(task_problem.problem, chosen, device=device, callback=callback,
                        baselines=task_problem.baselines,
                        denoiser=own_denoiser or task_problem.denoiser_for(chosen),
                        execution=execution or DEFAULT_EXECUTION)
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


def _restore_through(y: Any, operator: Any, *, task: str, method: str, sigma: Any,
                     reference: Any, preset: str | None, denoiser: str, own_denoiser: Any,
                     device: str, callback: Any, execution: Any, shape: Any, x0: Any,
                     settings: dict[str, Any]) -> Restoration:
    """:func:`restore` with ``operator=``: the user's H, y and (optionally) f."""
    import torch

    from deeprestore.config.resolve import SettingsResolver, default_preset
    from deeprestore.execution import DEFAULT_EXECUTION
    from deeprestore.methods import NETWORK_METHODS
    from deeprestore.solvers.runner import restore as run_solver
    from deeprestore.tasks import TaskError, TaskOptions
    from deeprestore.user_problem import user_problem

    if method not in (*NETWORK_METHODS, "red"):
        raise TaskError(f"method {method!r} needs a task's own operator; with operator= use "
                        "deepred, dip, dip-tv or red")
    if isinstance(sigma, str):
        raise TaskError("sigma='auto' estimates noise in an image, not in measurements through "
                        "an operator: give sigma (0–255 scale)")
    resolver = SettingsResolver(task, method, settings, denoiser, torch.device(device),
                                everyday=True)
    found, chosen = resolver.settings(preset or default_preset(TaskOptions(task)))
    problem = user_problem(y, operator, shape=shape, x0=x0, sigma=float(sigma or 0.0),
                           reference=reference, device=device)
    result = run_solver(problem, chosen, device=device, callback=callback,
                        denoiser=own_denoiser, execution=execution or DEFAULT_EXECUTION)
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
