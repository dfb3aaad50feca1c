"""Tasks: turn an observed image and task options into an engine :class:`Problem`.

A task knows its degradation operator H, how x starts, which PSNR protocol the paper used
(REFERENCE.md §5) and which classical baselines exist. The engine itself never sees the task.

| task | H | x starts at | PSNR | baseline |
|---|---|---|---|---|
| denoise | identity | y | RGB | nlm, bm3d |
| deblur | circular blur (FFT) | y | Y channel | wiener (Fourier Tikhonov) |
| superres | DIP Lanczos-2 downsampler | bicubic upscale of y | Y channel | bicubic |
| inpaint | binary mask | y with holes | RGB | biharmonic |
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.denoisers.correlated import jpeg_bm3d
from deeprestore.io.images import Image, to_tensor
from deeprestore.methods import DENOISER_BASELINES, TASK_METHODS
from deeprestore.metrics import psnr_function
from deeprestore.physics.degradations import bicubic_upscale, parse_mask_spec
from deeprestore.physics.noise import estimate_noise_sigma, looks_compressed
from deeprestore.physics.operators import (
    DOWNSAMPLERS,
    FACTORS,
    KNOWN_KERNELS,
    Blur,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
    load_kernel,
    named_kernel,
)
from deeprestore.solvers.base import Problem
from deeprestore.solvers.baselines import biharmonic_inpaint, wiener_deconvolution

#: the tasks: those the method registry serves
TASKS = tuple(TASK_METHODS)
TASK_PROTOCOL = {"denoise": "rgb", "deblur": "y", "superres": "y", "inpaint": "rgb"}
#: Noise std (0–255 scale) assumed when neither a flag, a sidecar nor a preset says.
DEFAULT_SIGMA = {"denoise": 25.0, "deblur": 2**0.5, "superres": 0.0, "inpaint": 0.0}
#: The value of ``sigma`` that asks for an estimate from the image (``--sigma auto``).
AUTO_SIGMA = "auto"
#: the noise models of ``--noise``: ``auto`` is ``jpeg`` for a JPEG input, ``white`` otherwise
NOISE_MODELS = ("auto", "white", "jpeg")
SIDECAR_SUFFIX = ".degrade.json"


class TaskError(ValueError):
    """Task options that do not fit the image (one-line message)."""


class TaskOptionError(TaskError):
    """A task option whose value is wrong whatever the image; ``option`` names it (``sigma``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass
class TaskOptions:
    """What the observed image went through.

    ``sigma``: noise std on the 0–255 scale, or ``"auto"``: estimated from the observed
    image (:func:`deeprestore.physics.noise.estimate_noise_sigma`; not for inpainting);
    ``kernel``: a named kernel (``uniform9``, ``gauss25``) or a kernel file (deblur);
    ``factor``: 2, 4 or 8 and ``downsampler`` (``lanczos2`` or ``bicubic``) for superres;
    ``mask``: mask image file or (H, W) array, nonzero = known (inpaint); ``crop``: (top, left,
    height, width) of the high-resolution image that was kept before downscaling (from a
    ``degrade`` sidecar), to crop a reference the same way; ``noise`` (denoising): the noise
    model of BM3D, one of :data:`NOISE_MODELS` (None: ``auto``) — ``jpeg``: BM3D given the
    spectrum of the noise a JPEG file holds (:func:`~deeprestore.denoisers.correlated.jpeg_bm3d`),
    for ``--method bm3d``, and as DeepRED's and RED's f with ``--denoiser bm3d`` when asked for
    by name (``auto`` keeps f white: no gain measured there).
    """

    task: str = "denoise"
    sigma: float | str | None = None
    kernel: str | None = None
    factor: int | None = None
    downsampler: str | None = None
    mask: str | np.ndarray | None = None
    crop: tuple[int, int, int, int] | None = None
    noise: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def merged(self, *fallbacks: dict[str, Any], source_names: tuple[str, ...] = ()) -> TaskOptions:
        """Fill unset fields from ``fallbacks`` in order (flags win over sidecar over preset)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}
        sources = {k: self.sources.get(k, "flag") for k, v in values.items()
                   if v is not None and k != "task"}
        for name, fallback in zip(source_names or ("fallback",) * len(fallbacks), fallbacks,
                                  strict=False):
            for key, value in fallback.items():
                if key in values and values[key] is None and value is not None:
                    values[key] = tuple(value) if key == "crop" else value
                    sources[key] = name
        return TaskOptions(**values, sources=sources)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for the manifest (only what applies to the task)."""
        keys = {"denoise": ("sigma", "noise"), "deblur": ("sigma", "kernel"),
                "superres": ("sigma", "factor", "downsampler", "crop"),
                "inpaint": ("sigma", "mask")}[self.task]
        info: dict[str, Any] = {"task": self.task}
        for key in keys:
            value = getattr(self, key)
            info[key] = list(value) if isinstance(value, tuple) else value
        if self.sources:
            info["from"] = {k: v for k, v in self.sources.items() if k in keys}
        return info


@dataclass
class TaskProblem:
    """The engine problem plus what the writers need: baselines, protocol, info; and the
    denoisers made for this input (``denoisers``: name → a denoiser that replaces it, e.g.
    ``bm3d`` → ``bm3d-jpeg`` for a JPEG file), for the one-shot method always and as the
    network methods' and RED's f only when ``made_for_f`` (``--noise jpeg`` asked for it: under
    ``auto`` f stays white, measured no better as f — docs/tasks.md)."""

    problem: Problem
    protocol: str
    baselines: dict[str, Callable[[Problem], torch.Tensor]]
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


def sidecar_path(image_path: Path) -> Path:
    """Where ``degrade`` writes the parameters of ``image_path``: ``NAME.degrade.json``."""
    return image_path.with_name(image_path.stem + SIDECAR_SUFFIX)


def read_sidecar(image_path: Path) -> dict[str, Any]:
    """The ``degrade`` sidecar of ``image_path`` ({} when there is none); mask paths resolved."""
    path = sidecar_path(image_path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaskError(f"{path}: cannot read the degrade sidecar ({err})") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: the degrade sidecar is not a JSON object")
    if data.get("mask"):
        data["mask"] = str(path.parent / data["mask"])
    if data.get("kernel_file"):
        data["kernel"] = data["kernel_file"]
    return data


def load_blur_kernel(spec: str) -> np.ndarray:
    """A named kernel (``uniform9``, ``gauss25``) or a kernel file, as a (kh, kw) array."""
    if spec in KNOWN_KERNELS:
        return named_kernel(spec)
    path = Path(spec)
    if not path.suffix and not path.exists():
        raise TaskError(f"unknown kernel {spec!r} (use {', '.join(KNOWN_KERNELS)} or a file)")
    try:
        return load_kernel(path)
    except FileNotFoundError:
        raise TaskError(f"kernel file not found: {spec}") from None
    except ValueError as err:
        raise TaskError(str(err)) from None


def check_factor(factor: int | None) -> int:
    """The superres factor, which must be 2, 4 or 8."""
    if factor not in FACTORS:
        raise TaskError(f"factor must be 2, 4 or 8, got {factor}")
    return int(factor)


def check_kernel_fits(kernel: np.ndarray, size: tuple[int, int]) -> None:
    """Raise :class:`TaskError` when a (kh, kw) blur kernel is larger than a (height, width)
    image (the circular blur needs the kernel inside the image)."""
    if kernel.shape[0] > size[0] or kernel.shape[1] > size[1]:
        raise TaskError(
            f"the blur kernel is {kernel.shape[1]}x{kernel.shape[0]} but the image is only "
            f"{size[1]}x{size[0]}"
        )


def check_task_options(options: TaskOptions) -> None:
    """Task option values that are wrong whatever the image: :class:`TaskOptionError`."""
    sigma = options.sigma
    if sigma == AUTO_SIGMA:
        if options.task == "inpaint":
            raise TaskOptionError("sigma", "sigma auto is not available for inpainting (the "
                                  "mask's holes would count as noise); give a number")
    elif sigma is not None and (isinstance(sigma, str)
                                or not (math.isfinite(sigma) and sigma >= 0)):
        raise TaskOptionError("sigma", f"sigma must be a finite number ≥ 0 (0–255 scale) or "
                              f"{AUTO_SIGMA}, got {sigma}")
    try:
        if options.factor is not None:
            check_factor(options.factor)
    except TaskError as err:
        raise TaskOptionError("factor", str(err)) from None
    try:
        if isinstance(options.kernel, str) and not Path(options.kernel).exists():
            load_blur_kernel(options.kernel)
    except TaskError as err:
        raise TaskOptionError("kernel", str(err)) from None
    if isinstance(options.mask, str) and not Path(options.mask).exists():
        raise TaskOptionError("mask", f"file not found: {options.mask}")
    if options.downsampler not in (None, *DOWNSAMPLERS):
        raise TaskOptionError("downsampler", f"downsampler must be {' or '.join(DOWNSAMPLERS)}, "
                              f"got {options.downsampler}")
    if options.noise not in (None, *NOISE_MODELS):
        raise TaskOptionError("noise", f"noise must be one of {', '.join(NOISE_MODELS)}, got "
                                       f"{options.noise}")


def operator_for(options: TaskOptions, hr_size: tuple[int, int], channels: int) -> LinearOperator:
    """H for ``options`` acting on images of (height, width) ``hr_size``."""
    task = options.task
    if task == "denoise":
        return Identity()
    if task == "deblur":
        kernel = load_blur_kernel(options.kernel or "uniform9")
        check_kernel_fits(kernel, hr_size)
        return Blur(kernel)
    if task == "superres":
        return Downsample(check_factor(options.factor), kind=options.downsampler or "lanczos2")
    raise TaskError(f"no operator for task {task!r}")


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
    if pixels.shape[:2] != size and options.task == "superres":
        if options.crop is not None:
            top, left, height, width = options.crop
            pixels = pixels[top : top + height, left : left + width]
        else:  # same centre crop as `degrade`
            factor = check_factor(options.factor)
            extra_h, extra_w = pixels.shape[0] % factor, pixels.shape[1] % factor
            pixels = pixels[extra_h // 2 : pixels.shape[0] - (extra_h - extra_h // 2),
                            extra_w // 2 : pixels.shape[1] - (extra_w - extra_w // 2)]
    if pixels.shape[:2] != size:
        raise TaskError(
            f"the reference is {reference.width}x{reference.height} but the restored image will "
            f"be {size[1]}x{size[0]}"
        )
    return to_tensor(pixels)


def load_mask(spec: str | np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask (H, W) float {0, 1} from an image file or an (H, W) array (nonzero = known)."""
    if isinstance(spec, np.ndarray):
        if spec.shape != (height, width):
            raise TaskError(f"mask is {'x'.join(map(str, spec.shape))} but the image is "
                            f"{height}x{width}")
        return (spec != 0).astype(np.float64)
    if not Path(spec).exists():
        raise TaskError(f"mask file not found: {spec}")
    try:
        return parse_mask_spec(spec, height, width, np.random.default_rng(0))
    except ValueError as err:
        raise TaskError(f"{spec}: {err}") from None


def build_problem(options: TaskOptions, observed: Image, reference: Image | None) -> TaskProblem:
    """The :class:`Problem` for ``observed`` under ``options`` (reference: clean image or None)."""
    task = options.task
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    sigma = options.sigma if options.sigma is not None else DEFAULT_SIGMA[task]
    sources = dict(options.sources)
    compressed: bool | None = None  # whether the estimate took the input for a decoded JPEG
    if sigma == AUTO_SIGMA:
        compressed = (observed.compressed if observed.compressed is not None
                      else looks_compressed(observed.pixels))
        sigma = round(estimate_noise_sigma(observed.pixels, compressed=compressed), 2)
        sources["sigma"] = "estimated"
    elif isinstance(sigma, str):
        raise TaskOptionError("sigma", f"sigma must be a number or {AUTO_SIGMA}, got {sigma}")
    options = TaskOptions(**{**{f.name: getattr(options, f.name) for f in fields(options)},
                             "sigma": float(sigma), "sources": sources})
    y = to_tensor(observed.pixels)
    channels = observed.channels
    baselines: dict[str, Callable[[Problem], torch.Tensor]] = {}
    size = (observed.height, observed.width)
    if task == "superres":
        factor = check_factor(options.factor)
        options.factor = factor
        options.downsampler = options.downsampler or "lanczos2"
        size = (observed.height * factor, observed.width * factor)
        operator = operator_for(options, size, channels)
        x_init = to_tensor(bicubic_upscale(observed.pixels, factor))
        baselines["bicubic"] = lambda problem: problem.x_init
    elif task == "inpaint":
        if options.mask is None:
            raise TaskError("inpainting needs a mask: --mask MASK.png (nonzero = known pixel)")
        mask = load_mask(options.mask, observed.height, observed.width)
        operator = Mask(mask)
        y = operator.forward(y)
        x_init = y.clone()
        baselines["biharmonic"] = lambda problem: biharmonic_inpaint(problem.y.cpu(), mask).to(
            problem.y.device
        )
    else:
        operator = operator_for(options, size, channels)
        x_init = y.clone()
        if task == "deblur":
            kernel = load_blur_kernel(options.kernel or "uniform9")
            options.kernel = options.kernel or "uniform9"
            baselines["wiener"] = lambda problem: wiener_deconvolution(problem.y, kernel, sigma)
    protocol = TASK_PROTOCOL[task]
    problem = Problem(
        y=y,
        operator=operator,
        x_init=x_init,
        sigma=sigma,
        reference=_reference_tensor(reference, options, size, channels),
        psnr=psnr_function(protocol),
    )
    denoisers: dict[str, Denoiser] = {}
    made_for_f = False
    if task == "denoise":
        noise = _noise_model(options.noise, observed, compressed)
        if options.noise in (None, "auto") or options.sources.get("noise") == "auto":
            options.sources["noise"] = "auto"  # (a tile's options hold the whole image's choice)
        else:
            made_for_f = True
        options.noise = noise
        if noise == "jpeg":
            denoisers["bm3d"] = jpeg_bm3d(observed.pixels, observed.jpeg_tables)
    info = options.describe()
    if compressed is not None:  # which estimate: the noise left in a JPEG, or white noise's
        info["compressed"] = compressed
    info["operator"] = operator.describe()
    return TaskProblem(problem, protocol, baselines, info, denoisers, made_for_f)


def _noise_model(requested: str | None, observed: Image, compressed: bool | None) -> str:
    """``white`` or ``jpeg`` for ``--noise requested``: ``auto`` (None) is ``jpeg`` when the
    file is a JPEG or σ's estimate took it for a decoded one."""
    noise = requested or "auto"
    if noise == "auto":
        return "jpeg" if observed.compressed or compressed else "white"
    return noise


def tile_problem(options: TaskOptions, observed: Image, sigma: float, top: int, left: int,
                 height: int, width: int) -> TaskProblem:
    """The problem of one tile: the ``height``×``width`` box at (``top``, ``left``) of
    ``observed`` (input pixels; for super-resolution the low-resolution ones), under the same
    options with the whole image's ``sigma`` (0–255) and the mask cut to the box. No
    reference: a tiled run's PSNR is measured on the blended whole."""
    rows, cols = slice(top, top + height), slice(left, left + width)
    mask = options.mask
    if options.task == "inpaint" and mask is not None:
        mask = load_mask(mask, observed.height, observed.width)[rows, cols]
    cut = replace(options, sigma=float(sigma), mask=mask, crop=None)
    alpha = None if observed.alpha is None else observed.alpha[rows, cols]
    part = Image(observed.pixels[rows, cols], observed.bit_depth, alpha, observed.compressed,
                 observed.jpeg_tables)
    return build_problem(cut, part, None)
