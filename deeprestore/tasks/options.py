"""Task options: what the observed image went through, as the user, a ``degrade`` sidecar or a
preset says it, and the checks of their values.

Imports neither torch nor the engine, so that settings and presets can read them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from deeprestore.physics.kernels import DOWNSAMPLERS
from deeprestore.tasks.registry import DENOISE, TASKS, TaskError, check_factor, load_blur_kernel

#: The value of ``sigma`` that asks for an estimate from the image (``--sigma auto``).
AUTO_SIGMA = "auto"
#: the noise models of ``--noise``: ``auto`` is ``jpeg`` for a JPEG input, ``white`` otherwise
NOISE_MODELS = ("auto", "white", "jpeg")
SIDECAR_SUFFIX = ".degrade.json"


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

    task: str = DENOISE.name
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
        keys = TASKS[self.task].options
        info: dict[str, Any] = {"task": self.task}
        for key in keys:
            value = getattr(self, key)
            info[key] = list(value) if isinstance(value, tuple) else value
        if self.sources:
            info["from"] = {k: v for k, v in self.sources.items() if k in keys}
        return info


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


def check_task_options(options: TaskOptions) -> None:
    """Task option values that are wrong whatever the image: :class:`TaskOptionError`."""
    sigma = options.sigma
    if sigma == AUTO_SIGMA:
        task = TASKS.get(options.task)
        if task is not None and not task.sigma_estimable:
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
