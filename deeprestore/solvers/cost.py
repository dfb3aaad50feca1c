"""What a run will cost, known before it starts: time measured at the real size, memory
predicted, and the refusal of a run that would not fit.

:func:`estimate_cost` builds throw-away copies of the run's algorithm (nothing of them reaches
the real run, whose random draws are seeded on their own), predicts the peak memory
(:mod:`~deeprestore.solvers.memory`), checks it against the device's available memory and the
budget, and only then times one step and one denoiser call (:mod:`~deeprestore.solvers.timing`).
On CUDA DeepRED's real-size denoiser call is measured too. A run that would not fit raises
:class:`CostError`: one line that says how much, and which tile would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import get_denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution, configured_backends
from deeprestore.methods import NETWORK_METHODS
from deeprestore.models.skip import SIZE_MULTIPLE, half_side
from deeprestore.solvers.base import Problem
from deeprestore.solvers.memory import (
    MemoryModel,
    available_memory,
    measured_bytes,
    memory_model,
    release_device_memory,
)
from deeprestore.solvers.precision import AUTO, PrecisionChoice
from deeprestore.solvers.timing import denoiser_seconds, time_step


class CostError(ValueError):
    """A run that would not fit the memory or the time allowed (one-line message);
    ``fits_side``: for memory, the largest square tile side (a multiple of
    :data:`~deeprestore.models.skip.SIZE_MULTIPLE` px of the network's image) predicted to
    fit, None when none of at least twice that does; ``estimate``: for time, what the run was
    measured to cost; ``model``: the memory model, when one was
    made (a tile's estimate reuses its probes)."""

    def __init__(self, message: str, fits_side: int | None = None,
                 estimate: CostEstimate | None = None, model: MemoryModel | None = None
                 ) -> None:
        super().__init__(message)
        self.fits_side = fits_side
        self.estimate = estimate
        self.model = model


@dataclass(frozen=True)
class CostEstimate:
    """Seconds per network step and per denoiser call at the real size, iterations to run, and
    bytes: the predicted peak of the run's tensors and what the device has available (None when
    unknown)."""

    seconds_per_iteration: float
    denoiser_seconds: float
    iterations: int
    denoiser_calls: int
    peak_bytes: int
    available_bytes: int | None
    #: the side of the centre crop the times were measured on and scaled from (None: the
    #: real size); a large image's step runs slower per pixel than the crop's (the
    #: activations outgrow the caches: docs/notes/cost-estimate.md), so the time is then a low bound
    timed_on: int | None = None
    #: the precision the run will use, when ``auto`` chose it (None: the settings' own)
    precision: PrecisionChoice | None = None

    @property
    def seconds(self) -> float:
        """Expected wall time of the remaining iterations (seconds)."""
        return (self.iterations * self.seconds_per_iteration
                + self.denoiser_calls * self.denoiser_seconds)

    def describe(self, ceiling: bool = False) -> str:
        """One line: ``about 12 min (0.70 s/it × 1000 it), peak memory ≈ 1.2 GB of 20 GB``."""
        bound = "at most" if ceiling else "about"
        calls = (f" + {self.denoiser_calls} denoiser calls × {self.denoiser_seconds:.2g} s"
                 if self.denoiser_calls else "")
        free = ("" if self.available_bytes is None
                else f" of {format_bytes(self.available_bytes)} available")
        sampled = ("" if self.timed_on is None
                   else f"; timed on a {self.timed_on}² crop and scaled, slower in fact")
        arithmetic = "" if self.precision is None else f"; {self.precision.describe()}"
        return (f"{bound} {format_duration(self.seconds)} ({self.seconds_per_iteration:.3g} s/it "
                f"× {self.iterations} it{calls}{sampled}{arithmetic}), peak memory ≈ "
                f"{format_bytes(self.peak_bytes)}{free}")


def format_bytes(count: float) -> str:
    """``1.2 GB`` style (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # pragma: no cover


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_bytes(text: str) -> int:
    """``500MB``, ``2GB``, ``1.5 GB``, ``4096`` (bytes) → bytes; ValueError otherwise."""
    units = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
    cleaned = text.strip().upper().replace(" ", "").removesuffix("IB").removesuffix("I")
    number = cleaned.rstrip("KMGTB")
    unit = cleaned[len(number):]
    if unit in ("K", "M", "G", "T"):
        unit += "B"
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a size such as 500MB or 2GB, got {text!r}")
    return int(value * units[unit])


@dataclass(frozen=True)
class CostRequest:
    """What :func:`estimate_cost` is asked: the run (``problem``, ``settings``, ``device``,
    ``execution``), the ``iterations`` that remain (None: ``settings.iterations``) and the
    limits it must stay within (``max_bytes`` of memory, ``max_minutes`` of time; None: no
    limit beyond the device's memory)."""

    problem: Problem
    settings: Settings
    device: torch.device
    execution: Execution = DEFAULT_EXECUTION
    iterations: int | None = None
    max_bytes: int | None = None
    max_minutes: float | None = None


def estimate_cost(problem: Problem, settings: Settings, device: torch.device, *,
                  iterations: int | None = None, max_bytes: int | None = None,
                  max_minutes: float | None = None,
                  execution: Execution = DEFAULT_EXECUTION,
                  probes: tuple[int, int] | None = None) -> CostEstimate | None:
    """Measure what ``settings.method`` will cost on ``problem`` (tensors on ``device``).

    ``iterations``: how many remain (default ``settings.iterations``). Raises
    :class:`CostError` before timing anything when the predicted peak exceeds ``max_bytes`` (if
    given) or the device's available memory; after timing when the run would take longer than
    ``max_minutes`` (its ``estimate`` says how long), or (CUDA) when the measured denoiser call
    does not fit beside the network; and when the estimate itself runs out of device memory
    (the message names a tile that the memory model predicts to fit). The backends are set as
    the run will set them (:func:`~deeprestore.execution.configured_backends`), so the time is
    the run's; on the CPU an image above
    :data:`~deeprestore.solvers.timing.TIME_PROBE_SIDE`² is timed on its centre crop and scaled.
    ``probes``: the memory model's probes from an earlier estimate of the same run
    at another size (:attr:`MemoryModel.probes`), not measured again. None for methods without
    a network (one pass or a few, no estimate).
    """
    if settings.method not in NETWORK_METHODS:
        return None
    request = CostRequest(problem, settings, device, execution, iterations, max_bytes,
                          max_minutes)
    model: MemoryModel | None = None
    available = available_memory(device)
    # ``auto``: memory as in float32, the larger of the two candidates
    memory_settings = replace(settings, precision="float32") if settings.precision == AUTO \
        else settings
    try:
        with configured_backends(device, settings.precision):
            model = memory_model(problem, memory_settings, device, execution, probes)
            _check_memory(model, model.peak, max_bytes, available, device)
            return _timed_estimate(request, model, available)
    except torch.OutOfMemoryError:
        pass  # leave the handler first: its traceback holds the estimate's tensors
    release_device_memory(device)
    raise CostError(*_out_of_memory_advice(model, available_memory(device), device,
                                           max(problem.size)), model=model)


def _out_of_memory_advice(model: MemoryModel | None, available: int | None,
                          device: torch.device, side: int) -> tuple[str, int | None]:
    """The one-line message, and the tile side predicted to fit (at most half the image's
    ``side``, since the whole image did not), after the estimate ran out of memory on
    ``device``."""
    fits = None if model is None or available is None else model.largest_side(available)
    tile = None if fits is None else min(fits, half_side(side))
    if tile is not None and tile >= 2 * SIZE_MULTIPLE:
        return (f"ran out of memory on {device} while measuring the run: tiles of {tile} px "
                f"are predicted to fit (--tile {tile})", tile)
    return (f"ran out of memory on {device} while measuring the run: crop the image, free "
            "the device's memory, or use --device cpu", None)


def _check_memory(model: MemoryModel, peak: int, max_bytes: int | None, available: int | None,
                  device: torch.device) -> None:
    """CostError when ``peak`` exceeds ``max_bytes`` or the ``available`` memory."""
    limits = [(max_bytes, "the --max-memory budget is {}"),
              (available, f"{{}} available on {device}")]
    for limit, what in limits:
        if limit is not None and peak > limit:
            side = model.largest_side(limit)
            advice = ("use a smaller image (or crop it)" if side is None
                      else f"tiles of {side} px fit (--tile {side})")
            raise CostError(f"needs about {format_bytes(peak)} of memory, "
                            f"{what.format(format_bytes(limit))}: {advice}", side, model=model)


def _timed_estimate(request: CostRequest, model: MemoryModel,
                    available: int | None) -> CostEstimate:
    """Time one step (after a warm-up; for ``auto`` in each candidate precision, which it
    chooses) and one denoiser call at the real size, or on a sample scaled to it
    (:func:`~deeprestore.solvers.timing.timing_sample`); on CUDA the denoiser call's memory is
    measured and must fit beside the network's state (``model``: the memory model,
    ``available``: the device's memory)."""
    problem, settings, device = request.problem, request.settings, request.device
    remaining = settings.iterations if request.iterations is None else request.iterations
    peak = model.peak
    step = time_step(problem, settings, device, request.execution)
    calls, call_seconds = 0, 0.0
    if settings.method == "deepred" and settings.lam > 0:
        denoiser = get_denoiser(settings.denoiser)
        sigma = problem.sigma if settings.sigma_f is None else settings.sigma_f
        call_seconds = denoiser_seconds(settings.denoiser, problem.x_init, sigma, device)
        calls = math.ceil(remaining / settings.denoise_every)
        if device.type == "cuda":  # the call runs between steps, beside the network's state
            call_bytes = measured_bytes(device, lambda: denoiser(problem.x_init, sigma))
            peak = max(peak, step.state_bytes + call_bytes)
            _check_memory(model, peak, request.max_bytes, available, device)
    estimate = CostEstimate(step.seconds, call_seconds, remaining, calls, peak, available,
                            step.timed_on, step.choice)
    if request.max_minutes is not None and estimate.seconds > 60 * request.max_minutes:
        raise CostError(f"would take {estimate.describe(settings.stop == 'auto')}: more than "
                        f"--max-minutes {request.max_minutes:g}", estimate=estimate, model=model)
    return estimate
