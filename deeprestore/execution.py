"""How a step runs on this device: an options object passed in, never class state.

:class:`Execution` says how the network methods lay out and step their work (CPU layout, Adam
kernel, runs side by side or grouped, cores shared with a background denoiser). None of it
changes the method: only rounding and speed (docs/performance.md gives the measured ratios and the
``bench/speed.py`` rows that measure them). The numbers of a run (precision, torch.compile) stay
in :class:`~deeprestore.config.settings.Settings`, since the manifest records them.

Also here: the torch backend switches a device needs (:func:`configure_backends`), the layout
of one network step (:func:`prepare_network_step`) and whether a CPU has bf16 arithmetic.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch


@dataclass(frozen=True)
class Execution:
    """How the network methods execute their steps (the defaults are the measured best).

    ``fused_adam``: on a CPU or a CUDA GPU, step Adam with its fused kernel, one call instead
    of ~7 small ops per parameter tensor, which also skips a backtracked step on the device
    (``bench/speed.py``'s ``dip-unfused`` row turns it off: a backtracking rule then reads its
    decision on the host).
    ``cpu_channels_last``: on a CPU, lay the network out channels-last (True) or NCHW (False);
    None (default): follow the precision — channels-last for bf16, whose fast oneDNN kernels
    (AMX, AVX512-BF16) want it, NCHW for float32 (``bench/speed.py``'s ``dip-channels-last`` and
    ``dip-nchw`` rows; docs/performance.md).
    ``side_by_side``: on a CPU with several torch threads, step the runs of ``runs = N`` on
    ``min(N, threads)`` worker threads, each with its share of the threads
    (``dip-runs2-lockstep`` turns it off). Not with torch.compile or an async denoiser.
    ``grouped``: step the runs as one network of grouped convolutions with one Adam
    (``dip-runs2-grouped`` turns it on; meant for a GPU; :mod:`deeprestore.solvers.grouping`).
    ``share_cores``: async denoiser on a CPU: the network keeps n − 1 torch threads while a
    denoiser call is in flight, the denoiser gets one (``bench/speed.py --no-core-sharing``).
    ``step_graph``: how a run's iteration (Θ-step, x, u, growth, EMA; not f) executes when the
    runs step one by one: ``eager`` (default); ``compile`` — traced whole by
    ``torch.compile(fullgraph=True)`` with ``compile_backend`` (the gradient through
    ``torch.func``; on a CPU this is how the suite proves the step has no graph break);
    ``cuda-graph`` — captured as a CUDA graph after a warm-up and replayed
    (:mod:`deeprestore.solvers.captured`; eager elsewhere). Not measured on a GPU yet, hence
    not the default (issue 42).
    """

    fused_adam: bool = True
    cpu_channels_last: bool | None = None
    side_by_side: bool = True
    grouped: bool = False
    share_cores: bool = True
    step_graph: str = "eager"
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.step_graph not in STEP_GRAPHS:
            raise ValueError(f"step_graph must be one of {', '.join(STEP_GRAPHS)}, got "
                             f"{self.step_graph!r}")


#: how a run's iteration executes (:attr:`Execution.step_graph`)
STEP_GRAPHS = ("eager", "compile", "cuda-graph")


#: What :func:`deeprestore.solvers.runner.restore` uses when no :class:`Execution` is given.
DEFAULT_EXECUTION = Execution()

NetworkT = TypeVar("NetworkT", bound=torch.nn.Module)  # a SkipNet, or a BatchedSkipNet of runs


def channels_last(device: torch.device, precision: str,
                  execution: Execution = DEFAULT_EXECUTION) -> bool:
    """Whether the network of a run in ``precision`` on ``device`` is laid out channels-last:
    always on CUDA; on a CPU as ``execution.cpu_channels_last`` says, by default for bf16."""
    if device.type != "cpu":
        return device.type == "cuda"
    if execution.cpu_channels_last is None:
        return precision == "bf16"
    return execution.cpu_channels_last


def prepare_network_step(
    net: NetworkT, z: torch.Tensor, lr: float, device: torch.device,
    execution: Execution = DEFAULT_EXECUTION, precision: str = "float32",
) -> tuple[NetworkT, torch.Tensor, torch.optim.Adam]:
    """The network, its input z (N, C, H, W) and its Adam optimiser, laid out for ``device``
    and ``precision`` (:func:`channels_last`); on a CPU or a CUDA GPU Adam uses its fused
    kernel unless ``execution.fused_adam`` is off."""
    if channels_last(device, precision, execution):
        net = net.to(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
    fused = device.type in FUSED_ADAM_DEVICES and execution.fused_adam
    return net, z, torch.optim.Adam(net.parameters(), lr=lr, fused=fused or None)


#: where torch's Adam has a fused kernel that the engine uses (its ``found_inf`` skips a
#: backtracked step on the device: :mod:`deeprestore.solvers.adam`)
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def preload_optimizer_imports() -> threading.Thread:
    """Import ``torch._dynamo`` in a background thread and return it.

    The first optimiser a process makes imports it (``Optimizer.add_param_group`` is wrapped
    by ``torch._disable_dynamo``): about 3 s on a slow CPU, spent while the image is read and
    its noise estimated instead of before the cost line. Not a daemon thread: an interpreter
    that exits mid-import would be left half-initialised.
    """
    thread = threading.Thread(target=importlib.import_module, args=("torch._dynamo",),
                              name="deeprestore-preload")
    thread.start()
    return thread


def auto_device() -> torch.device:
    """The device ``--device auto`` means: the first CUDA GPU when there is one, else the CPU
    (``deeprestore.restore`` takes a device name and defaults to the CPU). The test suite
    replaces this one function to run every test on the device of
    ``DEEPRESTORE_TEST_DEVICE``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def own_thread_count(threads: int) -> None:
    """Give the calling thread its own torch (OpenMP) thread count.

    torch sets a thread's count lazily at its first parallel op, from the process default;
    asking for the count first does that now, so that the count set next stays. Setting it
    also changes the default for threads created later (the caller puts that back).
    """
    torch.get_num_threads()
    torch.set_num_threads(threads)


def configure_backends(device: torch.device, precision: str) -> None:
    """Set torch's global backend switches for a run on ``device`` (prefer the scoped
    :func:`configured_backends`, which puts them back).

    On CUDA: cuDNN autotuning on, TF32 off for convolutions and matmuls alike — TF32 is turned
    on only around the network's own forward and backward passes by :func:`network_arithmetic`
    when ``precision="tf32"``, so H, its adjoint, the x-update and the torch denoisers stay in
    float32 (``precision`` is accepted here for the callers' symmetry). ``bf16`` autocasts the
    network (the ADMM variables stay float32). Nothing changes on a CPU.
    """
    del precision  # TF32 is network_arithmetic's
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _backend_flags() -> tuple[bool, bool, bool]:
    return (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)


def _set_backend_flags(flags: tuple[bool, bool, bool]) -> None:
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = flags


@contextmanager
def configured_backends(device: torch.device, precision: str) -> Iterator[None]:
    """:func:`configure_backends` for the duration of a block; torch's global switches
    (``cudnn.benchmark``, ``cudnn.allow_tf32``, ``cuda.matmul.allow_tf32``) are put back as
    they were afterwards, so an API caller's own settings survive a run."""
    saved = _backend_flags()
    configure_backends(device, precision)
    try:
        yield
    finally:
        _set_backend_flags(saved)


@contextmanager
def network_arithmetic(device: torch.device, precision: str) -> Iterator[None]:
    """TF32 for the network's convolutions during a block (its forward or backward pass) when
    ``precision="tf32"`` on CUDA; otherwise nothing. The network is convolutions only, so
    matmuls (super-resolution's downsampler and its adjoint, also inside the backward pass)
    stay float32. The switch is global: a denoiser running on another thread at the same time
    (``denoiser_mode="async"``) would see it too."""
    if device.type != "cuda" or precision != "tf32":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX) for ``precision="bf16"``.

    Without it oneDNN has no fast bf16 kernels, and bf16 runs many times slower than float32
    (docs/performance.md). ``False`` where torch cannot tell.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)

