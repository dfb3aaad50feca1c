"""Problem building: turn an observed image and task options into an engine :class:`Problem`.

Each task (:mod:`deeprestore.tasks.registry`) gives H, how x starts, which PSNR protocol the
paper used and which classical baselines exist. The engine itself never sees the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

import numpy as np
import torch

from deeprestore.arrays import Image, to_tensor
from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.denoisers.correlated import jpeg_bm3d
from deeprestore.methods import DENOISER_BASELINES
from deeprestore.metrics import psnr_function
from deeprestore.physics.degradations import bicubic_upscale, crop_to_multiple
from deeprestore.physics.kernels import DEFAULT_DOWNSAMPLER
from deeprestore.physics.noise import estimate_noise_sigma, looks_compressed
from deeprestore.physics.operators import LinearOperator, Mask
from deeprestore.solvers.base import Problem
from deeprestore.solvers.baselines import biharmonic_inpaint, wiener_deconvolution
from deeprestore.tasks.options import AUTO_SIGMA, TaskOptionError, TaskOptions
from deeprestore.tasks.registry import (
    DEBLUR,
    DEFAULT_KERNEL,
    DENOISE,
    INPAINT,
    SUPERRES,
    TASKS,
    TaskError,
    check_factor,
    load_blur_kernel,
    load_mask,
)

#: a classical baseline: the problem → its estimate of x (1, C, H, W)
Baseline = Callable[[Problem], torch.Tensor]


@dataclass
class TaskProblem:
    """The engine problem plus what the writers need: baselines, protocol, info; and the
    denoisers made for this input (``denoisers``: name → a denoiser that replaces it, e.g.
    ``bm3d`` → ``bm3d-jpeg`` for a JPEG file), for the one-shot method always and as the
    network methods' and RED's f only when ``made_for_f`` (``--noise jpeg`` asked for it: under
    ``auto`` f stays white, measured no better as f — docs/photos.md)."""

    problem: Problem
    protocol: str
    baselines: dict[str, Baseline]
    info: dict[str, Any]
    denoisers: dict[str, Denoiser] = field(default_factory=dict)
    made_for_f: bool = False

    def denoiser_for(self, settings: Settings) -> Denoiser | None:
        """The denoiser made for this input that ``settings`` would run (as the one-shot
        method, or as f), or None: the registry's."""
        if settings.method in DENOISER_BASELINES:  # not over an implementation asked for
            return (self.denoisers.get(settings.method) if settings.denoiser == settings.method
                    else None)
        return self.denoisers.get(settings.denoiser) if self.made_for_f else None


@dataclass
class _Setup:
    """A task's part of a problem: H, y (masked for inpainting), x's start, x's (height,
    width) and the baselines."""

    operator: LinearOperator
    y: torch.Tensor
    x_init: torch.Tensor
    size: tuple[int, int]
    baselines: dict[str, Baseline] = field(default_factory=dict)


def _match_channels(image: Image, channels: int) -> Image:
    """Convert a reference to the input's channel count (RGB ↔ grey) so PSNR compares like."""
    if image.channels == channels:
        return image
    if channels == 1:
        grey = image.pixels @ np.array([0.299, 0.587, 0.114])
        return Image(grey[:, :, None], image.bit_depth)
    return Image(image.pixels.repeat(3, axis=2), image.bit_depth)


def _reference_tensor(
    reference: Image | None, options: TaskOptions, size: tuple[int, int], channels: int
) -> torch.Tensor | None:
    """The reference at the size of x; for superres, cropped the way ``degrade`` cropped it."""
    if reference is None:
        return None
    pixels = _match_channels(reference, channels).pixels
    if pixels.shape[:2] != size and options.task == SUPERRES.name:
        if options.crop is not None:
            top, left, height, width = options.crop
            pixels = pixels[top : top + height, left : left + width]
        else:  # the centre crop of `degrade` (none when smaller than one factor)
            factor = check_factor(options.factor)
            if min(pixels.shape[:2]) >= factor:
                pixels, _ = crop_to_multiple(pixels, factor)
    if pixels.shape[:2] != size:
        raise TaskError(
            f"the reference is {reference.width}x{reference.height} but the restored image will "
            f"be {size[1]}x{size[0]}"
        )
    return to_tensor(pixels)


def _with_sigma(options: TaskOptions, observed: Image
                ) -> tuple[TaskOptions, float | int, bool | None]:
    """``options`` with σ in effect (0–255): given, the task's default, or estimated from
    ``observed`` for ``auto``; then σ as it was given (int or float) for the problem, and
    whether the estimate took the input for a decoded JPEG (None: no estimate)."""
    sigma = options.sigma if options.sigma is not None else TASKS[options.task].default_sigma
    sources = dict(options.sources)
    compressed: bool | None = None
    if sigma == AUTO_SIGMA:
        compressed = (observed.compressed if observed.compressed is not None
                      else looks_compressed(observed.pixels))
        sigma = round(estimate_noise_sigma(observed.pixels, compressed=compressed), 2)
        sources["sigma"] = "estimated"
    elif isinstance(sigma, str):
        raise TaskOptionError("sigma", f"sigma must be a number or {AUTO_SIGMA}, got {sigma}")
    resolved = TaskOptions(**{**{f.name: getattr(options, f.name) for f in fields(options)},
                              "sigma": float(sigma), "sources": sources})
    return resolved, sigma, compressed


def _denoise(options: TaskOptions, observed: Image, y: torch.Tensor, sigma: float) -> _Setup:
    """H = I; x starts at y."""
    size = (observed.height, observed.width)
    return _Setup(DENOISE.operator(options, size), y, y.clone(), size)


def _deblur(options: TaskOptions, observed: Image, y: torch.Tensor, sigma: float) -> _Setup:
    """H = the blur; x starts at y; baseline: Wiener deconvolution at σ."""
    size = (observed.height, observed.width)
    operator = DEBLUR.operator(options, size)
    kernel = load_blur_kernel(options.kernel or DEFAULT_KERNEL)
    options.kernel = options.kernel or DEFAULT_KERNEL
    return _Setup(operator, y, y.clone(), size,
                  {"wiener": lambda problem: wiener_deconvolution(problem.y, kernel, sigma)})


def _superres(options: TaskOptions, observed: Image, y: torch.Tensor, sigma: float) -> _Setup:
    """H = the downsampler; x (factor× larger) starts at the bicubic upscale of y, which is
    also the baseline."""
    factor = check_factor(options.factor)
    options.factor = factor
    options.downsampler = options.downsampler or DEFAULT_DOWNSAMPLER
    size = (observed.height * factor, observed.width * factor)
    operator = SUPERRES.operator(options, size)
    x_init = to_tensor(bicubic_upscale(observed.pixels, factor))
    return _Setup(operator, y, x_init, size, {"bicubic": lambda problem: problem.x_init})


def _inpaint(options: TaskOptions, observed: Image, y: torch.Tensor, sigma: float) -> _Setup:
    """H = the mask; y and x's start are the input with its holes zeroed; baseline:
    biharmonic inpainting."""
    size = (observed.height, observed.width)
    operator = cast(Mask, INPAINT.operator(options, size))
    mask = operator.mask
    masked = operator.forward(y)
    return _Setup(operator, masked, masked.clone(), size, {
        "biharmonic": lambda problem: biharmonic_inpaint(problem.y.cpu(), mask).to(
            problem.y.device)})


#: task name → its part of the problem
_SETUPS: dict[str, Callable[[TaskOptions, Image, torch.Tensor, float], _Setup]] = {
    DENOISE.name: _denoise, DEBLUR.name: _deblur, SUPERRES.name: _superres,
    INPAINT.name: _inpaint,
}


def _noise_model(requested: str | None, observed: Image, compressed: bool | None) -> str:
    """``white`` or ``jpeg`` for ``--noise requested``: ``auto`` (None) is ``jpeg`` when the
    file is a JPEG or σ's estimate took it for a decoded one."""
    noise = requested or "auto"
    if noise == "auto":
        return "jpeg" if observed.compressed or compressed else "white"
    return noise


def _denoisers_for(options: TaskOptions, observed: Image, compressed: bool | None
                   ) -> tuple[dict[str, Denoiser], bool]:
    """Denoising: the denoisers made for this input and whether f uses them; records the
    noise model chosen in ``options``."""
    noise = _noise_model(options.noise, observed, compressed)
    made_for_f = False
    if options.noise in (None, "auto") or options.sources.get("noise") == "auto":
        options.sources["noise"] = "auto"  # (a tile's options hold the whole image's choice)
    else:
        made_for_f = True
    options.noise = noise
    denoisers: dict[str, Denoiser] = {}
    if noise == "jpeg":
        denoisers["bm3d"] = jpeg_bm3d(observed.pixels, observed.jpeg_tables)
    return denoisers, made_for_f


def build_problem(options: TaskOptions, observed: Image, reference: Image | None) -> TaskProblem:
    """The :class:`Problem` for ``observed`` under ``options`` (reference: clean image or None)."""
    if options.task not in TASKS:
        raise TaskError(f"unknown task {options.task!r} (known: {', '.join(TASKS)})")
    task = TASKS[options.task]
    options, sigma, compressed = _with_sigma(options, observed)
    setup = _SETUPS[task.name](options, observed, to_tensor(observed.pixels), sigma)
    problem = Problem(
        y=setup.y,
        operator=setup.operator,
        x_init=setup.x_init,
        sigma=sigma,
        reference=_reference_tensor(reference, options, setup.size, observed.channels),
        psnr=psnr_function(task.protocol),
    )
    denoisers: dict[str, Denoiser] = {}
    made_for_f = False
    if task is DENOISE:
        denoisers, made_for_f = _denoisers_for(options, observed, compressed)
    info = options.describe()
    if compressed is not None:  # which estimate: the noise left in a JPEG, or white noise's
        info["compressed"] = compressed
    info["operator"] = setup.operator.describe()
    return TaskProblem(problem, task.protocol, setup.baselines, info, denoisers, made_for_f)


def tile_problem(options: TaskOptions, observed: Image, sigma: float, top: int, left: int,
                 height: int, width: int) -> TaskProblem:
    """The problem of one tile: the ``height``×``width`` box at (``top``, ``left``) of
    ``observed`` (input pixels; for super-resolution the low-resolution ones), under the same
    options with the whole image's ``sigma`` (0–255) and the mask cut to the box. No
    reference: a tiled run's PSNR is measured on the blended whole."""
    rows, cols = slice(top, top + height), slice(left, left + width)
    mask = options.mask
    if options.task == INPAINT.name and mask is not None:
        mask = load_mask(mask, observed.height, observed.width)[rows, cols]
    cut = replace(options, sigma=float(sigma), mask=mask, crop=None)
    alpha = None if observed.alpha is None else observed.alpha[rows, cols]
    part = Image(observed.pixels[rows, cols], observed.bit_depth, alpha, observed.compressed,
                 observed.jpeg_tables)
    return build_problem(cut, part, None)
