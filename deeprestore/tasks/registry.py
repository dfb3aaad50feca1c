"""The tasks, one :class:`Task` each: what a task is, and its operator H made from its options.

| task | H | x starts at | PSNR | baselines |
|---|---|---|---|---|
| denoise | identity | y | RGB | nlm, bm3d |
| deblur | circular blur (FFT) | y | Y channel | wiener (Fourier Tikhonov) |
| superres | DIP Lanczos-2 downsampler | bicubic upscale of y | Y channel | bicubic |
| inpaint | binary mask | y with holes | RGB | biharmonic |

PSNR protocols follow the paper (REFERENCE.md §5, :mod:`deeprestore.metrics`). This module
imports neither torch nor the engine: an operator factory imports the physics it needs when it
is called. The option values that name something (a kernel, a mask, a factor) are read here,
with one-line :class:`TaskError` messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deeprestore.methods import DENOISER_BASELINES, ITERATIVE_METHODS
from deeprestore.physics.kernels import (
    DEFAULT_DOWNSAMPLER,
    KNOWN_KERNELS,
    check_sr_factor,
    load_kernel,
    named_kernel,
)

if TYPE_CHECKING:
    from deeprestore.physics.operators import LinearOperator
    from deeprestore.tasks.options import TaskOptions

#: the blur of ``deblur`` when no kernel is named
DEFAULT_KERNEL = "uniform9"


class TaskError(ValueError):
    """Task options that do not fit the image, or an unknown task (one-line message)."""


@dataclass(frozen=True)
class Task:
    """One task: its facts, read by the problem builder, the presets, the CLI and the API.

    ``operator(options, size)`` is H for images x of (height, width) ``size``;
    ``preset_variants`` lists (option, value, preset): the Table 1 preset that an option's
    value picks instead of ``preset``.
    """

    name: str
    #: one line for the command's ``--help``
    help: str
    #: H from the task options, for x of (height, width)
    operator: Callable[[TaskOptions, tuple[int, int]], LinearOperator]
    #: PSNR protocol: "rgb" or "y"
    protocol: str
    #: noise std (0–255 scale) assumed when neither a flag, a sidecar nor a preset says
    default_sigma: float
    #: the :class:`~deeprestore.tasks.options.TaskOptions` fields the task reads (in the
    #: manifest's order)
    options: tuple[str, ...]
    #: its classical methods (no network)
    baselines: tuple[str, ...]
    #: its Table 1 preset
    preset: str
    preset_variants: tuple[tuple[str, Any, str], ...] = ()
    #: whether σ may be estimated from the image (``--sigma auto``)
    sigma_estimable: bool = True
    #: whether a restore given no σ estimates it (rather than taking ``default_sigma``)
    sigma_estimated_by_default: bool = False
    #: how ``--help`` shows ``default_sigma`` ("" : the number itself)
    default_sigma_text: str = ""

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods the task offers: the iterative ones, then its baselines."""
        return (*ITERATIVE_METHODS, *self.baselines)

    def default_preset(self, options: TaskOptions) -> str:
        """The Table 1 preset for ``options`` (the blur or the factor picks the row)."""
        for option, value, preset in self.preset_variants:
            if getattr(options, option) == value:
                return preset
        return self.preset


def check_factor(factor: int | None) -> int:
    """The superres factor, which must be one of :data:`~deeprestore.physics.kernels.FACTORS`
    (2, 4 or 8); :class:`TaskError` otherwise."""
    if isinstance(factor, float) and factor.is_integer():
        factor = int(factor)  # 4.0 from a JSON sidecar or the API is the factor 4
    try:
        return check_sr_factor(factor)
    except ValueError as err:
        raise TaskError(str(err)) from None


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


def check_kernel_fits(kernel: np.ndarray, size: tuple[int, int]) -> None:
    """Raise :class:`TaskError` when a (kh, kw) blur kernel is larger than a (height, width)
    image (the circular blur needs the kernel inside the image)."""
    if kernel.shape[0] > size[0] or kernel.shape[1] > size[1]:
        raise TaskError(
            f"the blur kernel is {kernel.shape[1]}x{kernel.shape[0]} but the image is only "
            f"{size[1]}x{size[0]}"
        )


def load_mask(spec: str | np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask (H, W) float {0, 1} from an image file or an (H, W) array (nonzero = known)."""
    if isinstance(spec, np.ndarray):
        if spec.shape != (height, width):
            raise TaskError(f"mask is {'x'.join(map(str, spec.shape))} but the image is "
                            f"{height}x{width}")
        return (spec != 0).astype(np.float64)
    if not Path(spec).exists():
        raise TaskError(f"mask file not found: {spec}")
    from deeprestore.physics.degradations import parse_mask_spec

    try:
        return parse_mask_spec(spec, height, width, np.random.default_rng(0))
    except ValueError as err:
        raise TaskError(f"{spec}: {err}") from None


def _identity(options: TaskOptions, size: tuple[int, int]) -> LinearOperator:
    """H = I."""
    from deeprestore.physics.operators import Identity

    return Identity()


def _blur(options: TaskOptions, size: tuple[int, int]) -> LinearOperator:
    """Circular blur by the named or file kernel, which must fit in the (height, width) image."""
    from deeprestore.physics.operators import Blur

    kernel = load_blur_kernel(options.kernel or DEFAULT_KERNEL)
    check_kernel_fits(kernel, size)
    return Blur(kernel)


def _downsample(options: TaskOptions, size: tuple[int, int]) -> LinearOperator:
    """Downsampling by the factor with the chosen filter (default Lanczos-2)."""
    from deeprestore.physics.operators import Downsample

    return Downsample(check_factor(options.factor), kind=options.downsampler or DEFAULT_DOWNSAMPLER)


def _mask(options: TaskOptions, size: tuple[int, int]) -> LinearOperator:
    """The binary mask of ``options.mask`` (file or array) for a (height, width) image."""
    from deeprestore.physics.operators import Mask

    if options.mask is None:
        raise TaskError("inpainting needs a mask: --mask MASK.png (nonzero = known pixel)")
    return Mask(load_mask(options.mask, *size))


DENOISE = Task(
    name="denoise",
    help="Remove Gaussian noise (H = identity).",
    operator=_identity,
    protocol="rgb",
    default_sigma=25.0,
    options=("sigma", "noise"),
    baselines=DENOISER_BASELINES,
    preset="denoise",
    sigma_estimated_by_default=True,
)
DEBLUR = Task(
    name="deblur",
    help="Remove a known blur (H = circular convolution); σ defaults to √2 ≈ 1.41.",
    operator=_blur,
    protocol="y",
    default_sigma=2**0.5,
    default_sigma_text="√2 ≈ 1.41",
    options=("sigma", "kernel"),
    baselines=("wiener",),
    preset="deblur-uniform",
    preset_variants=(("kernel", "gauss25", "deblur-gauss"),),
)
SUPERRES = Task(
    name="superres",
    help="Upscale by 2, 4 or 8 (H = DIP's Lanczos-2 downsampler); the output is factor× larger.",
    operator=_downsample,
    protocol="y",
    default_sigma=0.0,
    options=("sigma", "factor", "downsampler", "crop"),
    baselines=("bicubic",),
    preset="superres-x4",
    preset_variants=(("factor", 8, "superres-x8"),),
)
INPAINT = Task(
    name="inpaint",
    help="Fill in missing pixels (H = binary mask).",
    operator=_mask,
    protocol="rgb",
    default_sigma=0.0,
    options=("sigma", "mask"),
    baselines=("biharmonic",),
    preset="inpaint",
    sigma_estimable=False,
)
#: name → task, in the order the command line lists them
TASKS: dict[str, Task] = {task.name: task for task in (DENOISE, DEBLUR, SUPERRES, INPAINT)}
