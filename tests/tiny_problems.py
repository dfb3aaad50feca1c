"""Helpers shared by engine tests: the test device, a tiny denoising problem, a small photo crop
and a scoped torch thread count.

The test device comes from ``DEEPRESTORE_TEST_DEVICE`` (``cpu`` when unset or empty, ``cuda``
or ``cuda:N``): tests run their engines, the API, the CLI and ``reproduce`` there
(tests/conftest.py checks the value and makes ``--device auto`` mean it).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from deeprestore.config.settings import Settings
from deeprestore.metrics import psnr_rgb
from deeprestore.physics.operators import Identity
from deeprestore.solvers import runner
from deeprestore.solvers.base import Problem, Result, problem_to_device

#: the environment variable naming the device the suite runs on
DEVICE_VARIABLE = "DEEPRESTORE_TEST_DEVICE"


def parse_test_device(text: str | None) -> torch.device:
    """The device ``text`` names: ``cpu`` (also for None or empty), ``cuda`` or ``cuda:N``.
    Raises ValueError (one line) for anything else."""
    name = (text or "").strip() or "cpu"
    if name == "cpu" or re.fullmatch(r"cuda(:[0-9]+)?", name):
        return torch.device(name)
    raise ValueError(f"{DEVICE_VARIABLE}={text!r}: expected cpu, cuda or cuda:N")


def _from_environment() -> torch.device:
    try:
        return parse_test_device(os.environ.get(DEVICE_VARIABLE))
    except ValueError:  # conftest's pytest_configure ends the session with the message
        return torch.device("cpu")


#: the device the suite runs on (DEEPRESTORE_TEST_DEVICE)
DEVICE: torch.device = _from_environment()
#: ``str(DEVICE)``: what ``--device`` and ``deeprestore.restore(device=...)`` take
DEVICE_NAME: str = str(DEVICE)
#: whether the suite runs on the CPU (tests marked ``cpu_only`` run only then)
ON_CPU: bool = DEVICE.type == "cpu"


def on_device(problem: Problem) -> Problem:
    """``problem`` with its tensors on the test device (what the runner does before it builds
    an algorithm; tests that build one themselves need it)."""
    return problem_to_device(problem, DEVICE)


def restore(problem: Problem, settings: Settings, **options: Any) -> Result:
    """:func:`deeprestore.solvers.runner.restore` on the test device (its result is on the
    CPU)."""
    return runner.restore(problem, settings, device=DEVICE, **options)


def restore_together(problems: Sequence[Problem], settings: Sequence[Settings],
                     **options: Any) -> list[Result | BaseException]:
    """:func:`deeprestore.solvers.runner.restore_together` on the test device."""
    return runner.restore_together(problems, settings, device=DEVICE, **options)


def tiny_denoising_problem(size: int = 16) -> Problem:
    """A (1, 3, size, size) random clean image in [0.25, 0.75] plus noise of std 0.1 (0–1
    scale), clipped; fixed seed, σ = 25 recorded (0–255 scale). On the CPU."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, size, size, generator=gen) * 0.5 + 0.25
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return Problem(noisy, Identity(), noisy.clone(), 25.0, clean, psnr_rgb)


def astronaut_crop(size: int = 32) -> np.ndarray:
    """The ``size``×``size`` crop at row 40, column 200 of scikit-image's astronaut (face and
    helmet edge): float64 (H, W, 3) in [0, 1]."""
    from skimage import data

    return (data.astronaut()[40 : 40 + size, 200 : 200 + size] / 255.0).astype(np.float64)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to ``count`` inside, put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
