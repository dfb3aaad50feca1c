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
from dataclasses import dataclass, replace

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import DEFAULT_EXECUTION, Execution, configured_backends
from deeprestore.methods import NETWORK_METHODS
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.precision import AUTO, PrecisionChoice, candidates, decide
from deeprestore.solvers.stopping import window_bytes

#: side of the larger probe: images with more pixels than its square are predicted, not probed
PROBE_SIDE = 128
_SMALL_PROBE = 64
#: on the CPU, an image with more pixels than this side's square is timed on its centre crop
#: of this side and the times scaled by the pixel count; the real step is slower per pixel on
#: a large image, whose activations outgrow the caches (``python bench/big_photo.py
#: --linearity``, docs/tasks.md), so the time is then a low bound
TIME_PROBE_SIDE = 256


class CostError(ValueError):
    """A run that would not fit the memory or the time allowed (one-line message);
    ``fits_side``: for memory, the largest square tile side (a multiple of 32 px of the
    network's image) predicted to fit, None when none of at least 64 px does; ``estimate``:
    for time, what the run was measured to cost; ``model``: the memory model, when one was
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
    #: activations outgrow the caches: docs/tasks.md), so the time is then a low bound
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
    two probes), and the prediction for the problem at hand; ``probes``: the network's bytes
    at 64² and 128² (None when the problem was measured directly), which a model of another
    size of the same run reuses."""

    fixed: float
    per_pixel: float
    peak: int
    probes: tuple[int, int] | None = None

    def largest_side(self, limit: int) -> int | None:
        """The largest square side (multiple of 32, ≥ 64) whose prediction stays ≤ ``limit``."""
        if self.per_pixel <= 0:
            return None
        side = int(math.sqrt(max(limit - self.fixed, 0.0) / self.per_pixel)) // 32 * 32
        return side if side >= 64 else None


def memory_model(problem: Problem, settings: Settings, device: torch.device,
                 execution: Execution = DEFAULT_EXECUTION,
                 probes: tuple[int, int] | None = None) -> MemoryModel:
    """Peak bytes of ``settings.method``'s tensors on ``problem`` (network methods): measured
    directly up to :data:`PROBE_SIDE`² pixels, extrapolated linearly in the pixel count from
    64² and 128² probes above it (``probes``: their bytes, from an earlier model of the same
    method, settings, channels and device); ``problem``'s own tensors added."""
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
    if probes is None:
        probes = (_probe(problem, settings, device, execution, _SMALL_PROBE),
                  _probe(problem, settings, device, execution, PROBE_SIDE))
    low, high = probes
    slope = (high - low) / (large - small)
    per_pixel = slope + own / pixels
    fixed = high - slope * large
    if pixels <= large:
        network = _probe_real(problem, settings, device, execution)
    else:
        network = int(high + slope * (pixels - large))
    return MemoryModel(fixed, per_pixel, network + own, probes)


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
    the run's; on the CPU an image above :data:`TIME_PROBE_SIDE`² is timed on its centre crop
    and scaled. ``probes``: the memory model's probes from an earlier estimate of the same run
    at another size (:attr:`MemoryModel.probes`), not measured again. None for methods without
    a network (one pass or a few, no estimate).
    """
    if settings.method not in NETWORK_METHODS:
        return None
    model: MemoryModel | None = None
    available = available_memory(device)
    # ``auto``: memory as in float32, the larger of the two candidates
    memory_settings = replace(settings, precision="float32") if settings.precision == AUTO \
        else settings
    try:
        with configured_backends(device, settings.precision):
            model = memory_model(problem, memory_settings, device, execution, probes)
            _check_memory(model, model.peak, max_bytes, available, device)
            return _timed_estimate(problem, settings, device, model, iterations, max_bytes,
                                   max_minutes, available, execution)
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
                            f"{what.format(format_bytes(limit))}: {advice}", side, model=model)


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
    from deeprestore.denoisers import get_denoiser

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
        return {p: (seconds[p], _state_bytes(algorithms[p])) for p in precisions}
    finally:
        for algorithm in algorithms.values():
            algorithm.close()


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
    measured = step_seconds(timed, settings, device, execution, options)
    choice = decide({p: seconds * scale for p, (seconds, _) in measured.items()},
                    None if scale == 1.0 else max(timed.size))
    seconds, state = measured[choice.precision]
    return choice, seconds * scale, state


def _timed_estimate(problem: Problem, settings: Settings, device: torch.device,
                    model: MemoryModel, iterations: int | None, max_bytes: int | None,
                    max_minutes: float | None, available: int | None,
                    execution: Execution) -> CostEstimate:
    """Time one step (after a warm-up; for ``auto`` in each candidate precision, which it
    chooses) and one denoiser call at the real size, or on a sample scaled to it
    (:func:`timing_sample`); on CUDA the denoiser call's memory is measured and must fit
    beside the network's state."""
    remaining = settings.iterations if iterations is None else iterations
    peak = model.peak
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
    calls, call_seconds = 0, 0.0
    if settings.method == "deepred" and settings.lam > 0:
        from deeprestore.denoisers import get_denoiser

        denoiser = get_denoiser(settings.denoiser)
        sigma = problem.sigma if settings.sigma_f is None else settings.sigma_f
        call_seconds = denoiser_seconds(settings.denoiser, problem.x_init, sigma, device)
        calls = math.ceil(remaining / settings.denoise_every)
        if device.type == "cuda":  # the call runs between steps, beside the network's state
            call_bytes = _measured_bytes(device, lambda: denoiser(problem.x_init, sigma))
            peak = max(peak, state + call_bytes)
            _check_memory(model, peak, max_bytes, available, device)
    estimate = CostEstimate(step, call_seconds, remaining, calls, peak, available,
                            None if scale == 1.0 else max(timed.size), choice)
    if max_minutes is not None and estimate.seconds > 60 * max_minutes:
        raise CostError(f"would take {estimate.describe(settings.stop == 'auto')}: more than "
                        f"--max-minutes {max_minutes:g}", estimate=estimate, model=model)
    return estimate
