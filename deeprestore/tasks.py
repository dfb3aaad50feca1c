"""Tasks: turn an observed image and task options into an engine :class:`Problem`.

A task knows its degradation operator H, how x starts, which PSNR protocol the paper used and
which classical baselines exist. The engine itself never sees the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from deeprestore.engine import Problem
from deeprestore.images import Image, to_tensor
from deeprestore.metrics import psnr_function
from deeprestore.operators import Identity

#: Task → (PSNR protocol, methods offered on the command line).
TASK_PROTOCOL = {"denoise": "rgb", "deblur": "y", "superres": "y", "inpaint": "rgb"}
NETWORK_AND_RED = ("deepred", "dip", "dip-tv", "red")
TASK_METHODS: dict[str, tuple[str, ...]] = {
    "denoise": (*NETWORK_AND_RED, "nlm", "bm3d"),
}


class TaskError(ValueError):
    """Task options that do not fit the image (one-line message)."""


@dataclass
class TaskOptions:
    """What the observed image went through. ``sigma``: noise std on the 0–255 scale."""

    task: str = "denoise"
    sigma: float = 25.0

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for the manifest."""
        return {"task": self.task, "sigma": self.sigma}


@dataclass
class TaskProblem:
    """The engine problem plus what the writers need: baselines, protocol, reference."""

    problem: Problem
    protocol: str
    baselines: dict[str, Callable[[Problem], torch.Tensor]]
    reference: Image | None
    info: dict[str, Any]


def build_problem(options: TaskOptions, observed: Image, reference: Image | None) -> TaskProblem:
    """The :class:`Problem` for ``observed`` under ``options`` (reference: clean image or None)."""
    y = to_tensor(observed.pixels)
    ref_tensor = None
    if reference is not None:
        ref_tensor = to_tensor(_match_channels(reference, observed.channels).pixels)
        if ref_tensor.shape[-2:] != y.shape[-2:]:
            raise TaskError(
                f"the reference is {reference.width}x{reference.height} but the input is "
                f"{observed.width}x{observed.height}"
            )
    protocol = TASK_PROTOCOL[options.task]
    problem = Problem(
        y=y,
        operator=Identity(),
        x_init=y.clone(),
        sigma=options.sigma,
        reference=ref_tensor,
        psnr=psnr_function(protocol),
    )
    return TaskProblem(problem, protocol, {}, reference, options.describe())


def _match_channels(image: Image, channels: int) -> Image:
    """Convert a reference to the input's channel count (RGB ↔ grey) so PSNR compares like."""
    if image.channels == channels:
        return image
    if channels == 1:
        grey = image.pixels @ [0.299, 0.587, 0.114]
        return Image(grey[:, :, None], image.bit_depth)
    return Image(image.pixels.repeat(3, axis=2), image.bit_depth)
