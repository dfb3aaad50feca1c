"""What a run will cost, known before it starts: time measured at the real size, memory predicted.

:func:`estimate_cost` builds a throw-away copy of the run's algorithm (nothing of it reaches the
real run, whose random draws are seeded on their own), predicts the peak memory from the bytes
autograd keeps for one network step, checks it against the device's available memory, and only
then times one step at the real size and one denoiser call. The memory model: the step's saved
activations grow linearly with the pixel count (measured on this project's CPU: 39.8 MB at 64²,
132.8 at 128², 503.6 at 256², 1984.6 at 512², slope within 0.5 % of the 64–128 fit), so images
above :data:`PROBE_SIDE`² are predicted from two small probes instead of risking the real size;
the process's peak resident memory during a 512² DIP step rose by 1965 MB, the prediction says
1993 + the network's own state. On CUDA the probes' bytes are measured instead (the caching
allocator's peak during a step after a first one: cuDNN's workspaces included, its autotuning
left out; docs/tasks.md), and DeepRED's real-size denoiser call is measured too.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import DEFAULT_EXECUTION, Execution, configured_backends
from deeprestore.methods import NETWORK_METHODS
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.stopping import window_bytes

#: side of the larger probe: images with more pixels than its square are predicted, not probed
PROBE_SIDE = 128
_SMALL_PROBE = 64


class CostError(ValueError):
    """A run that would not fit the memory or the time allowed (one-line message);
    ``fits_side``: for memory, the largest square tile side (a multiple of 32 px of the
    network's image) predicted to fit, None when none of at least 64 px does."""

    def __init__(self, message: str, fits_side: int | None = None) -> None:
        super().__init__(message)
        self.fits_side = fits_side


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
        return (f"{bound} {format_duration(self.seconds)} ({self.seconds_per_iteration:.3g} s/it "
                f"× {self.iterations} it{calls}), peak memory ≈ {format_bytes(self.peak_bytes)}"
                f"{free}")


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


def available_memory(device: torch.device) -> int | None:
    """Bytes the run can still use: on CUDA the device's free memory plus what PyTorch's caching
    allocator holds unused (``mem_get_info`` counts those blocks as taken, though this process
    can reuse them); MemAvailable on Linux (None where it cannot be read)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _state_bytes(algorithm: Algorithm) -> int:
    """Bytes of the tensors an algorithm holds between steps (networks, Adam, x, u, z, ...)."""
    seen: set[int] = set()
    total = 0

    def add(tensor: torch.Tensor) -> None:
        nonlocal total
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()

    for run in getattr(algorithm, "runs", []):
        for value in vars(run).values():
            if isinstance(value, torch.Tensor):
                add(value)
        for param in run.net.parameters():
            add(param)
            if param.grad is not None:
                add(param.grad)
        for state in run.optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    add(value)
    return total


def _step_bytes(algorithm: Algorithm) -> int:
    """Bytes autograd keeps for one step (the activations), plus the state after it, plus the
    backward pass's transients: four copies of z's size per run (z + noise, its gradient and
    the first layer's; measured 160 MB at 560² with 8-channel networks, where the saved bytes
    alone missed the peak by as much — with the default 128 channels this overshoots by 7 %)."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        algorithm.update()
    transient = sum(4 * run.z.numel() * run.z.element_size()
                    for run in getattr(algorithm, "runs", []))
    return saved + _state_bytes(algorithm) + transient


def release_device_memory(device: torch.device) -> None:
    """Give PyTorch's cached, unused blocks back to a CUDA device (after a run, and after an
    out-of-memory error, so that the next run — or another process — finds them free)."""
    if device.type == "cuda":
        gc.collect()  # tensors held by reference cycles (an exception's frames) first
        torch.cuda.empty_cache()


def _measured_bytes(device: torch.device, work: Callable[[], object],
                    warm_up: Callable[[], object] | None = None) -> int:
    """CUDA: the most memory the allocator handed out while ``work`` ran, above what was
    allocated before ``warm_up`` (if given) and ``work`` — so it includes cuDNN's workspaces
    and the allocator's 512-byte rounding, which a count of tensor bytes misses (not the slack
    of its 2–20 MiB segments, which fragmentation can add). ``warm_up`` runs first,
    outside the peak: cuDNN's autotuning (``cudnn.benchmark``) tries algorithms with workspaces
    of up to several GB once per shape and takes only what is free, which no later step needs
    (measured on an H200: a 256² step's peak 8.8 GB with autotuning, under 1 GB without)."""
    release_device_memory(device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    if warm_up is not None:
        warm_up()
        torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    torch.cuda.synchronize(device)
    return max(int(torch.cuda.max_memory_allocated(device) - before), 0)


def _network_bytes(problem: Problem, settings: Settings, device: torch.device,
                   execution: Execution) -> int:
    """Peak bytes of the network method on ``problem`` without its denoiser: on CUDA measured
    over a step after a first one (which autotunes cuDNN and creates Adam's state); elsewhere
    counted (:func:`_step_bytes`)."""
    quiet = _without_denoiser(settings)
    if device.type != "cuda":
        algorithm = make_algorithm(problem, quiet, device, execution=execution)
        try:
            return _step_bytes(algorithm)
        finally:
            algorithm.close()
    made: list[Algorithm] = []

    def first_step() -> None:
        made.append(make_algorithm(problem, quiet, device, execution=execution))
        made[0].update()

    try:
        return _measured_bytes(device, lambda: made[0].update(), warm_up=first_step)
    finally:
        for algorithm in made:
            algorithm.close()


def _probe(problem: Problem, settings: Settings, device: torch.device, execution: Execution,
           side: int) -> int:
    """Step bytes of the same method on a ``side``² denoising problem of the same channels."""
    y = torch.full((1, problem.channels, side, side), 0.5, device=device)
    return _network_bytes(Problem(y, Identity(), y.clone(), problem.sigma), settings, device,
                          execution)


def _without_denoiser(settings: Settings) -> Settings:
    """The same network step without f (the probes measure the network only)."""
    values = settings.to_dict()
    values.update(lam=0.0, denoiser_mode="sync", backtrack_drop=0.0, compile=False)
    return Settings(**values).validate()


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of a run as ``fixed + per_pixel × pixels`` of the network's image (from the
    two probes), and the prediction for the problem at hand."""

    fixed: float
    per_pixel: float
    peak: int

    def largest_side(self, limit: int) -> int | None:
        """The largest square side (multiple of 32, ≥ 64) whose prediction stays ≤ ``limit``."""
        if self.per_pixel <= 0:
            return None
        side = int(math.sqrt(max(limit - self.fixed, 0.0) / self.per_pixel)) // 32 * 32
        return side if side >= 64 else None


def memory_model(problem: Problem, settings: Settings, device: torch.device,
                 execution: Execution = DEFAULT_EXECUTION) -> MemoryModel:
    """Peak bytes of ``settings.method``'s tensors on ``problem`` (network methods): measured
    directly up to :data:`PROBE_SIDE`² pixels, extrapolated linearly in the pixel count from
    64² and 128² probes above it; ``problem``'s own tensors added."""
    height, width = problem.size
    pixels = height * width
    small, large = _SMALL_PROBE**2, PROBE_SIDE**2
    tensors = [problem.y, problem.x_init, problem.reference]
    own = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    if settings.stop == "auto":  # the automatic stop's window of outputs
        own += window_bytes(settings.stop_window, problem.x_init.numel())
    if pixels <= small:
        network = _probe_real(problem, settings, device, execution)
        return MemoryModel(float(network), 0.0, network + own)
    low = _probe(problem, settings, device, execution, _SMALL_PROBE)
    high = _probe(problem, settings, device, execution, PROBE_SIDE)
    slope = (high - low) / (large - small)
    per_pixel = slope + own / pixels
    fixed = high - slope * large
    if pixels <= large:
        network = _probe_real(problem, settings, device, execution)
    else:
        network = int(high + slope * (pixels - large))
    return MemoryModel(fixed, per_pixel, network + own)


def predict_peak_bytes(problem: Problem, settings: Settings, device: torch.device,
                       execution: Execution = DEFAULT_EXECUTION) -> int:
    """The predicted peak bytes of :func:`memory_model`."""
    return memory_model(problem, settings, device, execution).peak


def _probe_real(problem: Problem, settings: Settings, device: torch.device,
                execution: Execution) -> int:
    return _network_bytes(problem, settings, device, execution)


def _timed(call: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def estimate_cost(problem: Problem, settings: Settings, device: torch.device, *,
                  iterations: int | None = None, max_bytes: int | None = None,
                  max_minutes: float | None = None,
                  execution: Execution = DEFAULT_EXECUTION) -> CostEstimate | None:
    """Measure what ``settings.method`` will cost on ``problem`` (tensors on ``device``).

    ``iterations``: how many remain (default ``settings.iterations``). Raises
    :class:`CostError` before timing anything when the predicted peak exceeds ``max_bytes`` (if
    given) or the device's available memory; after timing when the run would take longer than
    ``max_minutes``, or (CUDA) when the measured denoiser call does not fit beside the network;
    and when the estimate itself runs out of device memory (the message names a tile that the
    memory model predicts to fit). The backends are set as the run will set them
    (:func:`~deeprestore.execution.configured_backends`), so the time is the run's. None for
    methods without a network (one pass or a few, no estimate).
    """
    if settings.method not in NETWORK_METHODS:
        return None
    model: MemoryModel | None = None
    available = available_memory(device)
    try:
        with configured_backends(device, settings.precision):
            model = memory_model(problem, settings, device, execution)
            _check_memory(model, model.peak, max_bytes, available, device)
            return _timed_estimate(problem, settings, device, model, iterations, max_bytes,
                                   max_minutes, available, execution)
    except torch.OutOfMemoryError:
        pass  # leave the handler first: its traceback holds the estimate's tensors
    release_device_memory(device)
    raise CostError(*_out_of_memory_advice(model, available_memory(device), device,
                                           max(problem.size)))


def _out_of_memory_advice(model: MemoryModel | None, available: int | None,
                          device: torch.device, side: int) -> tuple[str, int | None]:
    """The one-line message, and the tile side predicted to fit (at most half the image's
    ``side``, since the whole image did not), after the estimate ran out of memory on
    ``device``."""
    fits = None if model is None or available is None else model.largest_side(available)
    tile = None if fits is None else min(fits, side // 2 // 32 * 32)
    if tile is not None and tile >= 64:
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
                            f"{what.format(format_bytes(limit))}: {advice}", side)


def _timed_estimate(problem: Problem, settings: Settings, device: torch.device,
                    model: MemoryModel, iterations: int | None, max_bytes: int | None,
                    max_minutes: float | None, available: int | None,
                    execution: Execution) -> CostEstimate:
    """Time one step (after a warm-up) and one denoiser call at the real size; on CUDA the
    denoiser call's memory is measured and must fit beside the network's state."""
    remaining = settings.iterations if iterations is None else iterations
    peak = model.peak
    algorithm = make_algorithm(problem, settings, device, execution=execution)
    try:
        algorithm.update()  # warm-up: allocations, autotuning
        step = _timed(algorithm.update, device)
        state = _state_bytes(algorithm)
    finally:
        algorithm.close()
    del algorithm
    calls, call_seconds = 0, 0.0
    if settings.method == "deepred" and settings.lam > 0:
        from deeprestore.denoisers import get_denoiser

        denoiser = get_denoiser(settings.denoiser)
        sigma = problem.sigma if settings.sigma_f is None else settings.sigma_f
        call_seconds = _timed(lambda: denoiser(problem.x_init, sigma), device)
        calls = math.ceil(remaining / settings.denoise_every)
        if device.type == "cuda":  # the call runs between steps, beside the network's state
            call_bytes = _measured_bytes(device, lambda: denoiser(problem.x_init, sigma))
            peak = max(peak, state + call_bytes)
            _check_memory(model, peak, max_bytes, available, device)
    estimate = CostEstimate(step, call_seconds, remaining, calls, peak, available)
    if max_minutes is not None and estimate.seconds > 60 * max_minutes:
        raise CostError(f"would take {estimate.describe(settings.stop == 'auto')}: more than "
                        f"--max-minutes {max_minutes:g}")
    return estimate
