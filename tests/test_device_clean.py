"""Device cleanliness at run time: no CPU tensor meets a tensor of another device (issue 32).

What it catches
---------------
The CUDA path has never run here (no GPU on the developers' machines or in CI). Its typical bug
is a tensor made on the CPU inside code that was handed another device's tensors — Wiener's
``delta`` before issue 32, ``torch.zeros(...)`` without ``device=`` — which CUDA rejects at the
first operation that mixes the two. These tests run the library's torch code with its inputs on
a second device and fail on every operation whose tensor arguments sit on different devices:
every operator (forward, adjoint, composition, autograd through them), the paper's updates,
Wiener and the other baselines, one step of each network method and RED on each task, the
grouped step, the torch denoisers, and the runner around them.

How
---
The second device is ``meta``, but the tensors carry data: an :class:`Elsewhere` tensor is a CPU
tensor wrapped in a tensor subclass whose ``device`` says ``meta``. Inside :func:`elsewhere` (a
``TorchDispatchMode`` for aten operations plus a ``TorchFunctionMode`` for ``torch.tensor``,
which bypasses dispatch) every operation is checked, then run on the CPU data:

* an operation that mixes an ``Elsewhere`` tensor with a CPU one raises :class:`DeviceMix` (and is
  recorded in :data:`VIOLATIONS`, in case library code swallows the exception), with CUDA's
  exceptions: a 0-dim CPU tensor (a "CPU scalar") as an operand of a binary elementwise
  operation or ``where``, CPU index tensors of advanced indexing (``x[idx]``, ``x[idx] = v``),
  and copies across devices (``.to``, ``copy_``); a CPU generator drawing for an ``Elsewhere``
  tensor is a mix too;
* factories asked for ``device=meta`` (``torch.zeros(..., device=x.device)``, ``.to(x.device)``,
  ``torch.tensor(data, device=x.device)``) make ``Elsewhere`` tensors, and what an operation on
  ``Elsewhere`` tensors returns is ``Elsewhere`` (``.cpu()`` gives the CPU data back);
* the data is there, so ``.item()``, ``.tolist()``, ``torch.unique`` and comparisons that decide
  control flow work: whole steps run (network, autograd, Adam, bm3d-torch, backtracking, the
  runner's logging), and their results can be compared with the CPU's.

Why not plain ``meta`` tensors: they have no data (``.item()``, ``.tolist()`` and
``torch.unique`` fail: bm3d-torch, the runner, the reference code's rules), and the meta kernels
do not check devices everywhere — measured with torch 2.13, ``mm``/``matmul``, ``conv2d``,
``index_select`` and an in-place ``add_`` of a CPU tensor into a meta one all pass on meta,
while CUDA rejects them. :func:`test_the_pure_torch_parts_run_on_the_real_meta_device` still runs
the operators, the updates, Wiener and nlm-torch on genuine meta tensors, a second witness that
relies on PyTorch's own checks alone.

What it can't catch
-------------------
* Code that does not run here: branches taken only when ``device.type == "cuda"`` (channels-last,
  pinned memory, cuDNN/TF32 switches, memory measurement), bf16 autocast, torch.compile, the
  async denoiser's worker thread (dispatch modes are per thread: there a factory would make a
  data-less meta tensor, which :func:`_handle` reports rather than computes with), and any path
  these tests do not take. tests/test_tensor_factories.py covers those statically: every tensor
  factory call in ``deeprestore/`` passes ``device=``, is ``*_like``, is moved at once with
  ``.to(...)``, or is on its allow-list with a reason.
* Rules that differ from CUDA's in detail: the exceptions above are read off CUDA's kernels
  (TensorIterator's CPU scalars, indexing's CPU indices), not run on it; an operation where
  they differ would be a false alarm here or, for a CPU scalar given to an elementwise kernel
  that CUDA does not let take one, a miss.
* What is not about devices: streams, ``non_blocking`` copies, memory, numerics. Torch's own
  optimiser code runs its single-tensor path (its foreach/fused kernels take no subclasses).
* Device generators: ``torch.Generator(device=x.device)`` cannot be made for ``meta``, so code
  that made one would fail here although CUDA takes it (the library draws from CPU generators
  on purpose; tests/test_tensor_factories.py lists where).
* Torch's special cases for ``meta``: ``Module.load_state_dict`` does not copy into a meta
  parameter (it warns; the warning is silenced here), so a network's loaded weights are not
  restored in these tests — that copy is device-safe anyway (``copy_`` moves across devices);
  everything else a checkpoint loads (Adam's state, x, u, the generator) is.
* The scikit-image / `bm3d` package baselines and reference denoisers go through numpy: they run
  on the host by design (one reference denoiser is run to check that its result comes back on
  the input's device).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import old_code
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.denoisers import get_denoiser
from deeprestore.denoisers.bm3d_torch import bm3d_torch
from deeprestore.denoisers.nlm_torch import nlm_torch
from deeprestore.execution import Execution
from deeprestore.physics.kernels import named_kernel
from deeprestore.physics.operators import (
    Blur,
    Compose,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
)
from deeprestore.solvers.base import Algorithm, Problem, problem_to_device
from deeprestore.solvers.baselines import biharmonic_inpaint, wiener_deconvolution
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.grouping import ProblemGroup
from deeprestore.solvers.runner import restore, restore_together
from deeprestore.solvers.updates import (
    dual_update,
    fixed_point_update,
    steepest_descent_update,
    total_variation,
)
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import TaskProblem, build_problem

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # torch skips copying a loaded state into a meta parameter (see the module docstring)
    pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter:UserWarning"),
]

#: the device the tensors under test say they are on
META = torch.device("meta")
CPU = torch.device("cpu")
aten = torch.ops.aten


class DeviceMix(RuntimeError):
    """An operation got tensors on two devices (CUDA would raise here)."""


#: every mix seen since the last :func:`elsewhere` began (library code could swallow the raise)
VIOLATIONS: list[str] = []

#: advanced indexing: CUDA accepts CPU index tensors (argument 1, a list) and moves them itself
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
             aten._index_put_impl_.default}
#: copies from one device to another: what moving a tensor is
_COPIES = {aten._to_copy.default, aten.copy_.default}


class Elsewhere(torch.Tensor):
    """A CPU tensor (``elem``) that says it is on :data:`META`; see the module docstring."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> Elsewhere:
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=META,
            requires_grad=elem.requires_grad)
        wrapper.elem = elem
        # the lazy conjugate/negative bits, so that torch resolves them where the CPU would
        torch._C._set_conj(wrapper, elem.is_conj())
        torch._C._set_neg(wrapper, elem.is_neg())
        return wrapper

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self) -> str:  # type: ignore[override]
        return f"Elsewhere({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        return _handle(func, args, kwargs or {})


def _where() -> str:
    """The innermost deeprestore line of the current stack (where the mix happened)."""
    for frame in reversed(traceback.extract_stack()):
        if "/deeprestore/" in frame.filename.replace("\\", "/"):
            return f"{frame.filename.split('deeprestore', 1)[-1]}:{frame.lineno} in {frame.name}"
    return "outside deeprestore"


def _mix(message: str) -> DeviceMix:
    text = f"{message} (at deeprestore{_where()})"
    VIOLATIONS.append(text)
    return DeviceMix(text)


def _describe(tensor: torch.Tensor) -> str:
    return f"{tensor.device.type} tensor {tuple(tensor.shape)} {str(tensor.dtype).split('.')[-1]}"


def _tensors(values: Any, into: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors among an aten call's ``values`` (arguments hold tensors, lists of tensors)."""
    for value in values:
        if isinstance(value, torch.Tensor):
            into.append(value)
        elif type(value) in (list, tuple):
            _tensors(value, into)
    return into


def _unwrapped(value: Any) -> Any:
    """An aten argument with the CPU data in place of its :class:`Elsewhere` tensors."""
    kind = type(value)
    if kind is Elsewhere:
        return value.elem
    if kind in (list, tuple):
        return kind(_unwrapped(item) for item in value)
    return value


def _wrapped(value: Any, wrap: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """An aten result with ``wrap`` applied to its tensors."""
    if isinstance(value, torch.Tensor):
        return wrap(value)
    if type(value) in (list, tuple):
        return type(value)(_wrapped(item, wrap) for item in value)
    return value


_WRITTEN: dict[Any, frozenset[int]] = {}


def _written_positions(func: Any) -> frozenset[int]:
    """The positions of the arguments ``func`` writes to (``self`` of ``add_``), cached."""
    positions = _WRITTEN.get(func)
    if positions is None:
        positions = frozenset(i for i, argument in enumerate(func._schema.arguments)
                              if argument.alias_info is not None and argument.alias_info.is_write)
        _WRITTEN[func] = positions
    return positions


_SCALAR_TAKERS: dict[Any, bool] = {}


def _takes_cpu_scalars(func: Any) -> bool:
    """Whether CUDA takes a 0-dim CPU tensor as an operand of ``func``: binary elementwise
    operations (TensorIterator's ``allow_cpu_scalars``: add, mul, div, pow, comparisons ...) and
    ``where``; not ternary ones (``addcmul``, ``lerp`` with a tensor weight), reductions,
    matmul, convolutions, concatenation."""
    takes = _SCALAR_TAKERS.get(func)
    if takes is None:
        operands = [argument for argument in func._schema.arguments
                     if str(argument.type) == "Tensor" and not argument.kwarg_only]
        takes = (func.overloadpacket is aten.where
                 or (torch.Tag.pointwise in func.tags and len(operands) == 2))
        _SCALAR_TAKERS[func] = takes
    return takes


def _check(func: Any, args: tuple[Any, ...], tensors: list[torch.Tensor], produces: bool,
           generator: torch.Generator | None) -> None:
    """Raise :class:`DeviceMix` when ``func``'s tensor arguments sit on two devices."""
    for tensor in tensors:
        if tensor.device == META and not isinstance(tensor, Elsewhere):
            raise _mix(f"{func}: a meta tensor without data (made outside elsewhere(), e.g. on "
                       "another thread)")
    if generator is not None and generator.device.type == "cpu" and produces:
        raise _mix(f"{func}: a CPU generator draws numbers for a {META.type} tensor")
    if func in _COPIES or not any(isinstance(tensor, Elsewhere) for tensor in tensors):
        return
    exempt: set[int] = set()
    if func in _INDEXING and len(args) > 1:
        exempt = {id(index) for index in args[1] if isinstance(index, torch.Tensor)}
    written = {id(args[i]) for i in _written_positions(func) if i < len(args)}
    for tensor in tensors:
        if isinstance(tensor, Elsewhere) or id(tensor) in exempt:
            continue
        if (tensor.dim() == 0 and tensor.device.type == "cpu" and id(tensor) not in written
                and _takes_cpu_scalars(func)):
            continue  # a CPU scalar, which CUDA's elementwise kernels take as a number
        raise _mix(f"{func}: mixes {META.type} tensors with a {_describe(tensor)}")


def _handle(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Check ``func(*args, **kwargs)`` for a device mix, then run it on the CPU data."""
    tensors = _tensors(kwargs.values(), _tensors(args, [])) if kwargs else _tensors(args, [])
    device = kwargs.get("device")
    to_meta = device is not None and torch.device(device) == META
    on_meta = any(type(t) is Elsewhere for t in tensors)
    produces = to_meta or (on_meta and device is None)
    _check(func, args, tensors, produces, kwargs.get("generator"))
    if not produces and not on_meta:
        return func(*args, **kwargs)
    cpu_kwargs = {key: _unwrapped(value) for key, value in kwargs.items()}
    if to_meta:
        cpu_kwargs["device"] = CPU
    out = func(*[_unwrapped(value) for value in args], **cpu_kwargs)
    originals = {id(t.elem if type(t) is Elsewhere else t): t for t in tensors}

    def wrap(value: torch.Tensor) -> torch.Tensor:
        original = originals.get(id(value))  # in-place and out= operations return an argument
        if original is not None:
            return original
        return Elsewhere(value) if produces else value

    return _wrapped(out, wrap)


class _DispatchCheck(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled in here; spares importing torch._dynamo (5 s)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        return _handle(func, args, kwargs or {})


_DATA_FACTORIES = (torch.tensor, torch.as_tensor, torch.asarray)


class _FunctionCheck(TorchFunctionMode):
    """``torch.tensor(data, device=meta)`` and ``Tensor.tolist`` never reach dispatch."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist and isinstance(args[0], Elsewhere):
            return args[0].elem.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], Elsewhere):
            raise TypeError(str(_mix(f"can't convert {META.type} device type tensor to numpy "
                                     "(as on CUDA: use .cpu() first)")))
        device = kwargs.get("device")
        if (func in _DATA_FACTORIES and device is not None and torch.device(device) == META
                and not (args and isinstance(args[0], torch.Tensor))):
            return Elsewhere(func(*args, **{**kwargs, "device": CPU}))
        return func(*args, **kwargs)


@contextmanager
def elsewhere() -> Iterator[list[str]]:
    """Check every torch operation of the block (see the module docstring); yields the list of
    mixes seen, which must stay empty."""
    VIOLATIONS.clear()
    with _FunctionCheck(), _DispatchCheck():
        yield VIOLATIONS


def moved(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the device under test (inside :func:`elsewhere`)."""
    result = tensor.to(META)
    assert isinstance(result, Elsewhere)
    return result


def on_meta(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and isinstance(tensor, Elsewhere) and tensor.device == META


# ----------------------------------------------------------------------------- the check itself


def test_the_check_catches_wieners_old_code() -> None:
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with elsewhere() as mixes, pytest.raises(DeviceMix, match="mixes meta tensors with a cpu"):
        old_code.wiener_deconvolution(moved(y), named_kernel("uniform9"), 2.0)
    assert len(mixes) == 1


@pytest.mark.parametrize("mix", [
    lambda a, b: a * b,
    lambda a, b: a @ b,  # the meta device lets these four through
    lambda a, b: torch.nn.functional.conv2d(a[None, None], b[None, None]),
    lambda a, b: a.index_select(0, torch.tensor([0, 1])),
    lambda a, b: a.clone().add_(b),
    lambda a, b: b.add_(a),  # a CPU tensor written with a device tensor
    lambda a, b: torch.cat([a, b]),
    lambda a, b: a.index_add_(0, torch.tensor([0]), a[:1]),
    lambda a, b: torch.randn(4, 4, device=a.device, generator=torch.Generator()),
    lambda a, b: torch.addcmul(a, a, torch.tensor(2.0)),  # CUDA takes CPU scalars in binary ops
])
def test_the_check_rejects_what_cuda_rejects(mix: Callable[[torch.Tensor, torch.Tensor], Any]
                                             ) -> None:
    with elsewhere(), pytest.raises(DeviceMix):
        mix(moved(torch.rand(4, 4)), torch.rand(4, 4))


def test_the_check_accepts_what_cuda_accepts() -> None:
    cpu = torch.rand(4, 4)
    with elsewhere() as mixes:
        a = moved(cpu)
        b = a * torch.tensor(2.0) + torch.zeros(4, 4, device=a.device)  # a CPU scalar
        b = b + torch.tensor([1.0, 2.0, 3.0, 4.0], device=a.device)
        b = torch.where(b > 10.0, torch.tensor(0.0), b)  # (never true)
        c = b[torch.tensor([0, 2])]  # CPU index tensors
        b[torch.tensor([1])] = 0.5
        b.copy_(cpu).add_(torch.ones_like(b))
        assert on_meta(c) and on_meta(b) and float(b.sum()) == pytest.approx(float(cpu.sum()) + 16)
        assert b.tolist() == (cpu + 1).tolist() and torch.unique(a).numel() == 16
        with pytest.raises(TypeError, match="meta"):
            a.numpy()  # as on CUDA: .cpu() first
        assert len(mixes) == 1
        mixes.clear()
        back = b.cpu()
    assert not mixes and type(back) is torch.Tensor and torch.equal(back, cpu + 1)


# --------------------------------------------------------------------------------- the physics


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _operators() -> dict[str, tuple[LinearOperator, tuple[int, int, int, int]]]:
    """Every operator kind, with the input shape (N, C, H, W) it takes."""
    mask = (_rand(16, 16, seed=1) > 0.3).float()
    blur = Blur(named_kernel("uniform9"))
    return {
        "identity": (Identity(), (2, 3, 16, 16)),
        "blur-uniform9": (blur, (2, 3, 16, 16)),
        "blur-gauss25": (Blur(named_kernel("gauss25"), label="gauss25"), (1, 1, 32, 28)),
        "downsample-x2-lanczos2": (Downsample(2), (1, 3, 16, 16)),
        "downsample-x4-bicubic": (Downsample(4, kind="bicubic"), (2, 3, 16, 32)),
        "mask": (Mask(mask), (1, 3, 16, 16)),
        "mask-per-channel": (Mask(np.stack([mask.numpy()] * 3)), (2, 3, 16, 16)),
        "compose": (Downsample(2) @ blur @ Mask(mask), (1, 3, 16, 16)),
        "compose-empty": (Compose(), (1, 3, 8, 8)),
    }


def test_operators_take_their_kernel_and_mask_from_device_tensors() -> None:
    kernel = torch.from_numpy(named_kernel("gauss25"))
    mask = (_rand(3, 32, 32, seed=1) > 0.5).float()
    x = _rand(1, 3, 32, 32)
    expected = Blur(kernel).forward(x), Mask(mask).forward(x)
    with elsewhere() as mixes:
        got = Blur(moved(kernel)).forward(moved(x)), Mask(moved(mask)).forward(moved(x))
    assert not mixes
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(_operators()))
def test_every_operator_runs_on_the_device_of_its_input(name: str, dtype: torch.dtype) -> None:
    operator, shape = _operators()[name]
    x = _rand(*shape, dtype=dtype)
    y_shape = (*shape[:2], *operator.output_shape(shape[2:]))
    y = _rand(*y_shape, seed=2, dtype=dtype)
    # on the CPU first: the operators cache their tensors, per device
    expected = (operator.forward(x), operator.adjoint(y), operator(x))
    with elsewhere() as mixes:
        xm, ym = moved(x), moved(y)
        got = (operator.forward(xm), operator.adjoint(ym), operator(xm))
        assert all(on_meta(t) for t in got)
        leaf = xm.clone().requires_grad_()  # the network methods differentiate through H
        (operator.forward(leaf) * ym).sum().backward()
        adjoint_of_y = leaf.grad
        assert on_meta(adjoint_of_y)
        assert operator.input_shape(tuple(y_shape[2:])) == tuple(shape[2:])
        operator.describe()
    assert not mixes
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)
    assert adjoint_of_y is not None
    assert torch.allclose(adjoint_of_y.cpu(), expected[1], atol=1e-5)


def test_the_updates_run_on_the_device_of_their_inputs() -> None:
    x, denoised, out, u = (_rand(2, 3, 8, 8, seed=s) for s in range(4))
    expected = (total_variation(x), fixed_point_update(denoised, out, u, 0.5, 0.7),
                steepest_descent_update(x, denoised, out, u, 0.5, 0.7, 0.1), dual_update(u, x, out))
    with elsewhere() as mixes:
        xm, dm, om, um = (moved(t) for t in (x, denoised, out, u))
        got = (total_variation(xm), fixed_point_update(dm, om, um, 0.5, 0.7),
               steepest_descent_update(xm, dm, om, um, 0.5, 0.7, 0.1), dual_update(um, xm, om))
        leaf = om.clone().requires_grad_()
        total_variation(leaf).backward()  # DIP-TV differentiates TV(T_Θ(z))
        assert all(on_meta(t) for t in got) and on_meta(leaf.grad)
    assert not mixes
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)


# ------------------------------------------------------------------------- baselines, denoisers


@pytest.mark.parametrize(("shape", "kernel", "sigma"), [
    ((1, 3, 16, 16), "uniform9", 2**0.5), ((2, 1, 32, 28), "gauss25", 0.0)])
def test_wiener_runs_on_the_device_of_y(shape: tuple[int, ...], kernel: str, sigma: float
                                        ) -> None:
    y = _rand(*shape)
    expected = wiener_deconvolution(y, named_kernel(kernel), sigma)
    with elsewhere() as mixes:
        got = wiener_deconvolution(moved(y), named_kernel(kernel), sigma)
        assert on_meta(got) and got.dtype == y.dtype
    assert not mixes and torch.equal(got.cpu(), expected)


def test_the_host_baselines_return_on_the_device_of_y() -> None:
    y = _rand(1, 3, 16, 16)
    mask = (_rand(16, 16, seed=1) > 0.3).double().numpy()
    expected = biharmonic_inpaint(y, mask), get_denoiser("nlm")(y, 25.0)
    with elsewhere() as mixes:
        ym = moved(y)
        got = biharmonic_inpaint(ym, mask), get_denoiser("nlm")(ym, 25.0)  # numpy inside
        assert all(on_meta(t) for t in got)
    assert not mixes
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_torch_denoisers_run_on_the_device_of_their_input(channels: int) -> None:
    x = _rand(2, channels, 16, 12)
    expected = nlm_torch(x, 20.0), bm3d_torch(x, 20.0, profile="fast", chunk=64)
    with elsewhere() as mixes:
        xm = moved(x)
        got = nlm_torch(xm, 20.0), bm3d_torch(xm, 20.0, profile="fast", chunk=64)
        assert all(on_meta(t) for t in got)
    assert not mixes
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)


# ------------------------------------------------------------------------------ one step per task

TASK_NAMES = ("denoise", "deblur", "superres", "inpaint")
ITERATIVE = ("deepred", "dip", "dip-tv", "red")


def _task_problem(task: str, size: int = 16) -> TaskProblem:
    """A tiny RGB problem of ``task``: a ``size`` px result (superres: from size/2 px)."""
    rng = np.random.default_rng(3)
    clean = rng.uniform(0.2, 0.8, (size, size, 3))
    observed = np.clip(clean + rng.normal(0.0, 0.05, clean.shape), 0.0, 1.0)
    options = {
        "denoise": TaskOptions("denoise", sigma=25.0),
        "deblur": TaskOptions("deblur", kernel="uniform9", sigma=2**0.5),
        "superres": TaskOptions("superres", factor=2),
        "inpaint": TaskOptions("inpaint", mask=(rng.uniform(size=(size, size)) > 0.3) * 1.0),
    }[task]
    if task == "superres":
        observed = observed[::2, ::2]
    return build_problem(options, Image(observed), Image(clean))


def _settings(method: str, **changes: Any) -> Settings:
    base: dict[str, Any] = dict(method=method, iterations=3, log_every=1, seed=1,
                                input_channels=4, net_channels=4, skip_channels=2,
                                denoiser="nlm-torch", sigma_f=10.0, denoise_every=1,
                                tv_weight=0.01 if method == "dip-tv" else 0.0, cg_steps=2)
    base.update(changes)
    return Settings(**base).validate()


def _on_meta(problem: Problem) -> Problem:
    moved_problem = problem_to_device(problem, META)
    assert on_meta(moved_problem.y) and on_meta(moved_problem.x_init)
    return moved_problem


def _step(algorithm: Algorithm) -> None:
    loss, gap = algorithm.update()
    assert on_meta(loss) and _finite(loss)
    assert gap is None or on_meta(gap)
    assert on_meta(algorithm.estimate())


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("method", ITERATIVE)
def test_one_step_of_each_method_on_each_task(method: str, task: str) -> None:
    problem = _task_problem(task).problem
    with elsewhere() as mixes:
        algorithm = make_algorithm(_on_meta(problem), _settings(method), META)
        try:
            _step(algorithm)
            if method in ("deepred", "dip", "dip-tv"):
                assert on_meta(algorithm.network_output())
        finally:
            algorithm.close()
    assert not mixes


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_classical_baseline_of_each_task(task: str) -> None:
    task_problem = _task_problem(task)
    method = {"denoise": "nlm", "deblur": "wiener", "superres": "bicubic",
              "inpaint": "biharmonic"}[task]
    with elsewhere() as mixes:
        algorithm = make_algorithm(_on_meta(task_problem.problem), _settings(method), META,
                                   baselines=task_problem.baselines)
        _step(algorithm)
    assert not mixes


def _on_the_host(state: Any) -> Any:
    """``state`` with its tensors on the CPU, as a checkpoint file loads it
    (``map_location="cpu"``)."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: _on_the_host(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_the_host(value) for value in state)
    return state


def test_the_reference_codes_rules_and_checkpoints() -> None:
    """DeepRED with every rule that reads numbers back (backtracking, λ/µ growth), the lagged
    denoiser, steepest descent, two runs, then its state loaded back as a checkpoint file
    gives it (on the CPU)."""
    problem = _task_problem("deblur").problem
    settings = _settings("deepred", runs=2, backtrack_drop=0.01, grow_step=0.03,
                         grow_threshold=1.0, denoiser_lag=True, denoise_every=2,
                         x_update="steepest-descent", inner_steps=2, output="x-u",
                         loss_terms="mean", lr_decay=0.5, lr_decay_every=2, x_start="zeros")
    with elsewhere() as mixes:
        algorithm = make_algorithm(_on_meta(problem), settings, META)
        try:
            for _ in range(2):
                _step(algorithm)
            algorithm.load_state_dict(_on_the_host(algorithm.state_dict()))  # a checkpoint
            _step(algorithm)
        finally:
            algorithm.close()
    assert not mixes


def test_the_grouped_step() -> None:
    """Two problems of one network shape stepped as one grouped network; its state written
    back to the runs and read again (restore_together below also leaves and regroups)."""
    first, second = _task_problem("denoise").problem, _task_problem("inpaint").problem
    with elsewhere() as mixes:
        algorithms = [make_algorithm(_on_meta(first), _settings("deepred", lam=0.0), META),
                      make_algorithm(_on_meta(second), _settings("dip", backtrack_drop=0.01),
                                     META)]
        ProblemGroup(algorithms, Execution(grouped=True))  # type: ignore[arg-type]
        try:
            for algorithm in algorithms:
                _step(algorithm)
            algorithms[0].scale_learning_rate(0.5)
            algorithms[0].load_state_dict(algorithms[0].state_dict())
            algorithms[1].load_state_dict(_on_the_host(algorithms[1].state_dict()))
            for algorithm in algorithms:
                _step(algorithm)
        finally:
            for algorithm in algorithms:
                algorithm.close()
    assert not mixes


def test_the_runner_and_the_automatic_stop() -> None:
    """restore() with the automatic stop, and restore_together(): grouped steps, each problem
    leaving the group when it is done, results back on the host."""
    problems = [_task_problem("superres").problem, _task_problem("superres").problem]
    with elsewhere() as mixes:
        alone = restore(problems[0], _settings("dip-tv", iterations=2, stop="auto",
                                               stop_window=2, stop_patience=1), device=META)
        together = restore_together(problems, [_settings("deepred", iterations=2, lam=0.0),
                                               _settings("dip", iterations=1, seed=2)],
                                    device=META, execution=Execution(grouped=True))
    assert not mixes
    for result in (alone, *together):
        assert not isinstance(result, BaseException), result
        assert result.image.device == CPU and type(result.image) is torch.Tensor
        assert all(row.psnr is not None for row in result.log)


# ----------------------------------------------------------------------------- the real meta


def test_the_pure_torch_parts_run_on_the_real_meta_device() -> None:
    """A second witness that relies on PyTorch's own device checks (weaker: see the module
    docstring) and on no code of this module."""
    for operator, shape in _operators().values():
        x = torch.empty(shape, device=META)
        y = torch.empty((*shape[:2], *operator.output_shape(shape[2:])), device=META)
        assert operator.forward(x).device == META and operator.adjoint(y).device == META
    x, denoised, out, u = (torch.empty(1, 3, 16, 16, device=META) for _ in range(4))
    assert total_variation(x).device == META
    assert fixed_point_update(denoised, out, u, 0.5, 0.5).device == META
    assert steepest_descent_update(x, denoised, out, u, 0.5, 0.5, 0.1).device == META
    assert dual_update(u, x, out).device == META
    assert wiener_deconvolution(x, named_kernel("uniform9"), 2.0).device == META
    assert nlm_torch(x, 25.0).device == META
    with pytest.raises(RuntimeError, match="device"):  # and it does catch Wiener's old code
        old_code.wiener_deconvolution(x, named_kernel("uniform9"), 2.0)
