"""How long a network run will take, measured before it starts, and ``auto``'s precision.

A step is timed after a warm-up step (allocations, cuDNN's autotuning) with the backends the
run will use, at the real size; on the CPU an image above :data:`TIME_PROBE_SIDE`² is timed on
its centre crop and the time scaled by the pixel count (:func:`timing_sample`). ``precision =
"auto"`` is resolved here by timing a step in each candidate precision
(:func:`choose_precision`; the rule is :func:`deeprestore.solvers.precision.decide`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import get_denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution
from deeprestore.physics.operators import Identity
from deeprestore.solvers import decisions
from deeprestore.solvers.base import Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.memory import state_bytes
from deeprestore.solvers.precision import AUTO, PrecisionChoice, candidates, decide

#: on the CPU, an image with more pixels than this side's square is timed on its centre crop
#: of this side and the times scaled by the pixel count; the real step is slower per pixel on
#: a large image, whose activations outgrow the caches (``python bench/big_photo.py
#: --linearity``, docs/notes/cost-estimate.md), so the time is then a low bound
TIME_PROBE_SIDE = 256


def _timed(call: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def timing_sample(image: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, float]:
    """The part of ``image`` (N, C, H, W) a time is measured on, and the factor that scales a
    time measured on it to the whole: on the CPU the centre crop of at most
    :data:`TIME_PROBE_SIDE` px a side and the ratio of pixel counts; elsewhere (a GPU's time is
    not linear at small sizes, and its memory is measured at the real size) the image and 1."""
    height, width = image.shape[-2:]
    if device.type == "cuda" or height * width <= TIME_PROBE_SIDE**2:
        return image, 1.0
    rows, cols = min(height, TIME_PROBE_SIDE), min(width, TIME_PROBE_SIDE)
    top, left = (height - rows) // 2, (width - cols) // 2
    crop = image[..., top:top + rows, left:left + cols].contiguous()
    return crop, height * width / (rows * cols)


def denoiser_seconds(name: str, image: torch.Tensor, sigma: float,
                     device: torch.device) -> float:
    """Seconds one call of the denoiser ``name`` takes on ``image`` (N, C, H, W) in [0, 1] at
    noise std ``sigma`` (0–255), measured on :func:`timing_sample`'s part and scaled."""
    denoiser = get_denoiser(name)
    sample, scale = timing_sample(image, device)
    return _timed(lambda: denoiser(sample, sigma), device) * scale


def _timing_problem(problem: Problem, device: torch.device) -> tuple[Problem, float]:
    """The problem a step is timed on (:func:`timing_sample`'s crop as a denoising problem,
    or ``problem`` itself) and the factor that scales its time to ``problem``'s."""
    sample, scale = timing_sample(problem.x_init, device)
    if scale == 1.0:
        return problem, 1.0
    return Problem(sample.clone(), Identity(), sample, problem.sigma), scale


def step_seconds(problem: Problem, settings: Settings, device: torch.device,
                 execution: Execution, precisions: tuple[str, ...]
                 ) -> dict[str, tuple[float, int]]:
    """Seconds of one network step of ``settings.method`` on ``problem`` in each of
    ``precisions``, and the bytes of its state: one algorithm per precision, each warmed up
    by a step (allocations, autotuning); then one timed step each, or with several precisions
    two, in A B B A order, the faster kept (the machine's speed drifts between them)."""
    algorithms = {}
    try:
        for precision in precisions:
            algorithm = make_algorithm(problem, replace(settings, precision=precision), device,
                                       execution=execution)
            algorithms[precision] = algorithm
            algorithm.update()
        order = list(precisions) if len(precisions) == 1 else [*precisions, *precisions[::-1]]
        seconds: dict[str, float] = {}
        for precision in order:
            took = _timed(algorithms[precision].update, device)
            seconds[precision] = min(took, seconds.get(precision, math.inf))
        return {p: (seconds[p], state_bytes(algorithms[p])) for p in precisions}
    finally:
        for algorithm in algorithms.values():
            algorithm.close()


@dataclass(frozen=True)
class StepTime:
    """One network step of a run, timed: ``seconds`` scaled to the whole image,
    ``state_bytes`` of the timed algorithm's state (networks, Adam, x, u, z), ``timed_on`` the
    side of the crop it was timed on (None: the real size), and ``choice`` how ``auto`` chose
    the precision (None when the settings named one)."""

    seconds: float
    state_bytes: int
    timed_on: int | None
    choice: PrecisionChoice | None


def time_step(problem: Problem, settings: Settings, device: torch.device,
              execution: Execution = DEFAULT_EXECUTION) -> StepTime:
    """One network step of ``settings.method`` on ``problem`` timed after a warm-up, in the
    settings' precision or, for ``auto``, in each candidate (the chosen one's time kept), at
    the real size or on :func:`timing_sample`'s crop and scaled."""
    timed, scale = _timing_problem(problem, device)
    choice: PrecisionChoice | None = None
    step: float | None = None
    if settings.precision == AUTO:
        choice, step, state = _choose_precision(timed, scale, settings, device, execution)
        settings = replace(settings, precision=choice.precision)
    if step is None:
        seconds, state = step_seconds(timed, settings, device, execution,
                                      (settings.precision,))[settings.precision]
        step = seconds * scale
    return StepTime(step, state, None if scale == 1.0 else max(timed.size), choice)


def choose_precision(problem: Problem, settings: Settings, device: torch.device,
                     execution: Execution = DEFAULT_EXECUTION) -> PrecisionChoice:
    """The precision ``settings`` run in on ``device``: theirs, or for ``auto`` the one
    :func:`deeprestore.solvers.precision.decide` picks from a step timed in float32 and in bf16
    (on the CPU's :func:`timing_sample` crop of a large image)."""
    return _choose_precision(*_timing_problem(problem, device), settings, device,
                             execution)[0]


def _choose_precision(timed: Problem, scale: float, settings: Settings, device: torch.device,
                      execution: Execution) -> tuple[PrecisionChoice, float | None, int]:
    """:func:`choose_precision` on the timing problem ``timed`` (:func:`_timing_problem`,
    whose times ``scale`` scales to the run's), with the chosen precision's measured seconds
    per step (scaled; None when nothing was timed) and its state's bytes (0 then)."""
    options = candidates(settings, device)
    if isinstance(options, PrecisionChoice):
        return options, None, 0
    timed_on = None if scale == 1.0 else max(timed.size)
    kind = decisions.step_kind(settings, device, max(timed.size))
    kept = decisions.recall(kind)
    if kept is not None:  # decided on this machine before: time the chosen precision only
        precision = kept["precision"]
        seconds, state = step_seconds(timed, settings, device, execution,
                                      (precision,))[precision]
        choice = PrecisionChoice(precision, AUTO, dict(kept.get("step_seconds", {})), timed_on,
                                 decided=f"kept since {kept.get('at')} "
                                         f"({decisions.cache_dir() / decisions.FILE_NAME})")
        return choice, seconds * scale, state
    measured = step_seconds(timed, settings, device, execution, options)
    choice = decide({p: seconds * scale for p, (seconds, _) in measured.items()}, timed_on)
    where = decisions.keep(kind, choice.precision, choice.step_seconds)
    choice = replace(choice, decided="measured now" + (f", kept in {where}" if where else ""))
    seconds, state = measured[choice.precision]
    return choice, seconds * scale, state
