"""What a network run needs in memory, known before it starts, and what the device has.

The peak of a network step is its state (networks, Adam's moments, x, u, z) plus the
activations autograd keeps for the backward pass, which grow linearly with the pixel count. So
:func:`memory_model` measures a step directly on images up to :data:`PROBE_SIDE`² and predicts
larger ones from two small probes (64² and 128²) instead of risking the real size; on a CPU
the bytes are counted (:func:`state_bytes`, the saved tensors), on CUDA measured from the
caching allocator's peak during a step after a first one (cuDNN's workspaces included, its
autotuning left out). How close the prediction comes: docs/notes/cost-estimate.md.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import DEFAULT_EXECUTION, Execution
from deeprestore.models.skip import SIZE_MULTIPLE
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.stopping import window_bytes

#: side of the larger probe: images with more pixels than its square are predicted, not probed
PROBE_SIDE = 128
_SMALL_PROBE = 64


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


def release_device_memory(device: torch.device) -> None:
    """Give PyTorch's cached, unused blocks back to a CUDA device (after a run, and after an
    out-of-memory error, so that the next run — or another process — finds them free)."""
    if device.type == "cuda":
        gc.collect()  # tensors held by reference cycles (an exception's frames) first
        torch.cuda.empty_cache()


def state_bytes(algorithm: Algorithm) -> int:
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
    the first layer's, which the saved bytes alone miss: docs/notes/cost-estimate.md)."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        algorithm.update()
    transient = sum(4 * run.z.numel() * run.z.element_size()
                    for run in getattr(algorithm, "runs", []))
    return saved + state_bytes(algorithm) + transient


def measured_bytes(device: torch.device, work: Callable[[], object],
                    warm_up: Callable[[], object] | None = None) -> int:
    """CUDA: the most memory the allocator handed out while ``work`` ran, above what was
    allocated before ``warm_up`` (if given) and ``work`` — so it includes cuDNN's workspaces
    and the allocator's 512-byte rounding, which a count of tensor bytes misses (not the slack
    of its 2–20 MiB segments, which fragmentation can add). ``warm_up`` runs first,
    outside the peak: cuDNN's autotuning (``cudnn.benchmark``) tries algorithms with workspaces
    of up to several GB once per shape and takes only what is free, which no later step needs
    (docs/performance.md)."""
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
        return measured_bytes(device, lambda: made[0].update(), warm_up=first_step)
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
        """The largest square side (a multiple of :data:`~deeprestore.models.skip.SIZE_MULTIPLE`,
        at least twice that) whose prediction stays ≤ ``limit``."""
        if self.per_pixel <= 0:
            return None
        side = (int(math.sqrt(max(limit - self.fixed, 0.0) / self.per_pixel)) // SIZE_MULTIPLE
                * SIZE_MULTIPLE)
        return side if side >= 2 * SIZE_MULTIPLE else None


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
        network = _network_bytes(problem, settings, device, execution)
        return MemoryModel(float(network), 0.0, network + own)
    if probes is None:
        probes = (_probe(problem, settings, device, execution, _SMALL_PROBE),
                  _probe(problem, settings, device, execution, PROBE_SIDE))
    low, high = probes
    slope = (high - low) / (large - small)
    per_pixel = slope + own / pixels
    fixed = high - slope * large
    if pixels <= large:
        network = _network_bytes(problem, settings, device, execution)
    else:
        network = int(high + slope * (pixels - large))
    return MemoryModel(fixed, per_pixel, network + own, probes)
