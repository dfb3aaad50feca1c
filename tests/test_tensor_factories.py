"""Every tensor factory call in ``deeprestore/`` says which device its tensor goes to (issue 32).

What it catches
---------------
A tensor made on the CPU inside code that works on another device's tensors fails on CUDA at
the first operation that mixes them (``wiener_deconvolution``'s ``delta`` before issue 32).
This is a static check of the source, so it also covers the code that
``tests/test_device_clean.py`` cannot run without a GPU (the ``device.type == "cuda"`` branches,
the async denoiser's thread, torch.compile, bf16, paths no test takes). Every call of a tensor
factory — ``torch.zeros``, ``ones``, ``full``, ``empty``, ``arange``, ``linspace``, ``eye``,
``tensor``, ``as_tensor``, ``from_numpy``, ``rand*``, ``Generator`` … (:data:`FACTORIES`) —
anywhere in ``deeprestore/`` (module level included; stricter than "in a function that receives a
tensor", since a helper that builds a tensor for its caller's device is the same bug) must

* pass ``device=`` (``torch.Generator("cuda")``: its positional device counts too), or
* be moved at once: the call is directly the receiver of ``.to(...)`` with a device (a ``device=``
  keyword or a first argument that is not a dtype) or of ``.cuda()``, or
* be on :data:`ALLOWED` (file and function) with a one-line reason: host-side work on purpose.

``*_like`` factories and ``Tensor.new_*`` inherit their input's device and are not factories here.

What it can't catch
-------------------
It reads names, not values: ``device=None`` or ``device=some_cpu_device`` passes, and a tensor
made with ``device=`` but moved back to the CPU later is not followed. A factory reached through
an alias it does not know (``getattr(torch, "zeros")``, a function stored in a variable) is
missed. Whether a tensor made on the CPU *on purpose* (an allowed entry) is moved before it meets
a device tensor is the runtime check's job (tests/test_device_clean.py) where that code runs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import old_code

PACKAGE = Path(__file__).resolve().parent.parent / "deeprestore"

#: the factories of ``torch`` (and ``torch.fft``) that make a tensor, or a generator, on the
#: CPU unless told otherwise
FACTORIES = frozenset({
    "zeros", "ones", "full", "empty", "empty_strided", "arange", "range", "linspace",
    "logspace", "eye", "tensor", "as_tensor", "asarray", "from_numpy", "frombuffer", "from_file",
    "scalar_tensor", "rand", "randn", "randint", "randperm", "Generator", "kaiser_window",
    "hann_window", "hamming_window", "blackman_window", "bartlett_window", "tril_indices",
    "triu_indices", "sparse_coo_tensor", "fftfreq", "rfftfreq", "Tensor", "FloatTensor",
    "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor", "BoolTensor", "ByteTensor",
})
#: ``torch.normal`` makes a tensor only when given a size (else it follows its tensor arguments)
SIZED_FACTORIES = frozenset({"normal"})
#: the modules whose attributes above are factories
TORCH_MODULES = frozenset({"torch", "torch.fft"})
_DTYPE_NAMES = frozenset({
    "float", "double", "half", "bfloat16", "float16", "float32", "float64", "int", "long",
    "short", "int8", "int16", "int32", "int64", "uint8", "bool", "complex64", "complex128",
    "cfloat", "cdouble",
})

_HOST_CONSTANTS = ("a small constant built in float64 on the host and moved once with "
                   ".to(device, float32): every device computes with the same numbers")
#: Host-side tensors made on purpose: (path under deeprestore/, qualified function name) -> why.
#: The name "*" allows a whole module, or a package when the path ends in "/".
ALLOWED: dict[tuple[str, str], str] = {
    ("arrays.py", "to_tensor"): "numpy <-> CPU tensors: host glue by design (callers move it)",
    ("tiles.py", "*"): "blends finished tiles (Result images are CPU tensors) on the host",
    ("physics/degradations.py", "blur_image"): "numpy in, numpy out (makes the papers' inputs)",
    ("physics/adjoint.py", "check_adjoint"): "draws on a seeded CPU generator (the same draws "
                                             "on every device), moved to the device at once; "
                                             "the coefficients a, b are Python floats",
    ("models/skip.py", "make_input"):
        "z is drawn by a CPU generator on purpose (the same z on every device), then .to(device)",
    ("solvers/network_run.py", "NetworkRun.__init__"):
        "the run's CPU generator: z and its perturbations are the same numbers on every device",
    ("solvers/perturbation.py", "PerturbationStream.next"):
        "on a CPU only: draws from the run's CPU generator (other devices fill a device buffer)",
    ("denoisers/nlm_torch.py", "_center_weight"):
        "_fast_exp(0) of a CPU scalar, read back at once with .item() (no device sync)",
    ("denoisers/bm3d_torch.py", "_dct_matrix"): _HOST_CONSTANTS,
    ("denoisers/bm3d_torch.py", "_bior15_matrix"): _HOST_CONSTANTS,
    ("denoisers/bm3d_torch.py", "_haar_scale"): _HOST_CONSTANTS,
    ("denoisers/bm3d_torch.py", "_kaiser_2d"): _HOST_CONSTANTS + " (the Kaiser window)",
    ("denoisers/bm3d_torch.py", "_opponent"): _HOST_CONSTANTS + " (the colour matrix)",
    ("denoisers/bm3d_torch.py", "_haar_stack"): _HOST_CONSTANTS + " (the group transforms)",
    ("denoisers/correlated.py", "jpeg_bm3d.psd"):
        "the clean proxy: the input's pixels through the `bm3d` package (numpy on the host)",
}


@dataclass(frozen=True)
class Finding:
    """A factory call that names no device: where, in which function, which factory."""

    path: str  # relative to deeprestore/
    line: int
    function: str  # qualified name ("Class.method", "outer.inner"), "<module>" at module level
    factory: str

    def __str__(self) -> str:
        return f"deeprestore/{self.path}:{self.line} in {self.function}: torch.{self.factory}(...)"


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _moves_to_a_device(call: ast.Call) -> bool:
    """Whether ``call`` (the ``.to(...)``/``.cuda()`` call around a factory) names a device."""
    assert isinstance(call.func, ast.Attribute)
    if call.func.attr == "cuda":
        return True
    if any(keyword.arg == "device" for keyword in call.keywords):
        return True
    if not call.args:
        return False
    first = call.args[0]
    name = _dotted(first) or ""
    is_dtype = name.split(".")[-1] in _DTYPE_NAMES or name.endswith("dtype")
    return not is_dtype


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.scope: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> "torch" / "torch.fft" / "torch.zeros"
        self.parents: dict[int, ast.AST] = {}
        self.findings: list[Finding] = []

    def scan(self, tree: ast.Module) -> list[Finding]:
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[id(child)] = parent
        self.visit(tree)
        return self.findings

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802 - ast's naming
        for alias in node.names:
            if alias.name in TORCH_MODULES:
                self.aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        if node.module in TORCH_MODULES:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _scoped(self, name: str, node: ast.AST) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        self._scoped(node.name, node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:  # noqa: N802
        self._scoped(node.name, node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        self._scoped(node.name, node)

    def _factory(self, call: ast.Call) -> str | None:
        """The factory's name when ``call`` is a torch factory call, else None."""
        name = _dotted(call.func)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        resolved = self.aliases.get(head, head if head == "torch" else None)
        if resolved is None:
            return None
        full = f"{resolved}.{rest}" if rest else resolved
        module, _, attr = full.rpartition(".")
        if module not in TORCH_MODULES:
            return None
        if attr in FACTORIES:
            return attr
        if attr in SIZED_FACTORIES and (len(call.args) >= 3 or any(
                keyword.arg == "size" for keyword in call.keywords)):
            return attr
        return None

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        factory = self._factory(node)
        if factory is not None and not self._names_a_device(node, factory):
            self.findings.append(Finding(self.path, node.lineno,
                                         ".".join(self.scope) or "<module>", factory))
        self.generic_visit(node)

    def _names_a_device(self, node: ast.Call, factory: str) -> bool:
        if any(keyword.arg == "device" for keyword in node.keywords):
            return True
        if factory == "Generator" and node.args:
            return True
        attribute = self.parents.get(id(node))
        if isinstance(attribute, ast.Attribute) and attribute.attr in ("to", "cuda"):
            outer = self.parents.get(id(attribute))
            return (isinstance(outer, ast.Call) and outer.func is attribute
                    and _moves_to_a_device(outer))
        return False


def scan_source(source: str, path: str) -> list[Finding]:
    """The factory calls of ``source`` (a module's text) that name no device."""
    return _Scanner(path).scan(ast.parse(source))


def scan_package() -> list[Finding]:
    """The factory calls in deeprestore/ that name no device (allowed ones included)."""
    findings: list[Finding] = []
    for file in sorted(PACKAGE.rglob("*.py")):
        path = file.relative_to(PACKAGE).as_posix()
        findings.extend(scan_source(file.read_text(encoding="utf-8"), path))
    return findings


def _allowance(finding: Finding) -> tuple[str, str] | None:
    """The :data:`ALLOWED` key that covers ``finding``, if any."""
    for path, function in ALLOWED:
        if function == "*" and (finding.path == path or (path.endswith("/")
                                                         and finding.path.startswith(path))):
            return path, function
        if finding.path == path and finding.function == function:
            return path, function
    return None


def test_every_tensor_factory_in_the_package_names_its_device() -> None:
    offenders = [str(finding) for finding in scan_package() if _allowance(finding) is None]
    assert not offenders, (
        "tensor factories that name no device (on CUDA they make a CPU tensor that fails at the "
        "first operation with a device tensor): pass device=..., use a *_like factory, move the "
        "result at once with .to(device), or — host-side on purpose — add the function to "
        "ALLOWED in tests/test_tensor_factories.py with a reason:\n  " + "\n  ".join(offenders))


def test_the_allow_list_has_no_stale_entries() -> None:
    used = {_allowance(finding) for finding in scan_package()}
    stale = [f"{path} {function}" for path, function in ALLOWED if (path, function) not in used]
    assert not stale, f"ALLOWED entries that no longer allow anything (remove them): {stale}"


def test_the_check_flags_wieners_old_code() -> None:
    source = Path(old_code.__file__).read_text()  # Wiener before issue 32 (tests/old_code.py)
    findings = scan_source(source, "solvers/baselines.py")
    lines = source.splitlines()
    assert [(f.function, f.factory) for f in findings] == [
        ("wiener_deconvolution", "zeros"), ("wiener_deconvolution", "zeros")]
    assert [lines[f.line - 1].split("=")[0].strip() for f in findings] == ["delta", "laplacian"]
    assert all(_allowance(finding) is None for finding in findings)


def test_the_check_knows_the_forms_that_name_a_device() -> None:
    clean = '''
import numpy as np
import torch
import torch as th
from torch import fft

def f(x, a):
    torch.zeros(3, device=x.device)
    torch.zeros_like(x)
    x.new_zeros(3)
    torch.from_numpy(a).to(device=x.device, dtype=x.dtype)
    torch.from_numpy(a).to(x.device)
    torch.tensor([1.0]).to(x)
    torch.ones(2).cuda()
    th.arange(4, device="cuda")
    torch.Generator("cuda")
    torch.Generator(device=x.device)
    torch.normal(x, 1.0)
    fft.fftfreq(4, device=x.device)
    np.zeros(3)
'''
    assert scan_source(clean, "example.py") == []
    dirty = '''
import torch
import torch as th
from torch import zeros as z
from torch.fft import rfftfreq

W = torch.tensor([1.0, 2.0])

class A:
    def f(self, x):
        z(3)
        th.ones(2)
        torch.from_numpy(x.numpy()).to(torch.float64)
        torch.tensor([1.0]).to(dtype=x.dtype)
        torch.randn(3).float().to(x.device)
        torch.Generator()
        torch.normal(0.0, 1.0, size=(3,))
        torch.fft.fftfreq(4)
        rfftfreq(4)

        def inner():
            return torch.eye(2)
        return inner
'''
    assert [(f.function, f.factory) for f in scan_source(dirty, "example.py")] == [
        ("<module>", "tensor"), ("A.f", "zeros"), ("A.f", "ones"), ("A.f", "from_numpy"),
        ("A.f", "tensor"), ("A.f", "randn"), ("A.f", "Generator"), ("A.f", "normal"),
        ("A.f", "fftfreq"), ("A.f", "rfftfreq"), ("A.f.inner", "eye")]
