"""Peer check: the reference implementations' own code and deeprestore, side by side.

    python bench/peer.py --deepred-repo PATH [--dip-repo PATH] [--data ../shared/data]
                         [--tasks denoise,dip,superres] [--images house,peppers]
                         [--sr-images butterfly] [--seeds 0,1] [--crop 64] [--sr-crop 128]
                         [--iters 1200] [--sr-iters 2000] [--checkpoints 300,600,900,1200]
                         [--sr-checkpoints 500,1000,1500,2000] [--timing-iters 30]
                         [--timing-warmup 5] [--threads 2] [--json PATH]
                         [--ours-set [TASK:]KEY=VALUE ...]

Three rows of comparison, each on the same inputs for both sides:

- ``denoise``: DeepRED's denoising notebook (``train_via_admm`` with its own defaults, its network
  from ``get_network_and_input`` and its ``non_local_means``; ``admm_iter = --iters``) on a centre
  crop of each cbm3d9 image with σ = 25 noise, once as released and once at the paper's Table 1
  settings (LR 0.01, no λ/µ growth), against deeprestore ``deepred`` with the ``denoise`` preset;
- ``dip``: the DIP denoising notebook's loop (closure with EMA and backtracking, its
  ``optimize('adam', …)``) against deeprestore ``dip`` with the ``denoise`` preset (runs = 1);
- ``superres``: DeepRED's ×4 SR notebook ``train_via_admm`` with the denoising notebook's NLM as
  its denoiser (the SR notebook's BM3D needs MATLAB), against deeprestore ``deepred`` with the
  ``superres-x4`` preset and ``denoiser = "nlm"``, σ_f 5. Both get the LR image made by
  ``deeprestore.physics.degradations.lanczos_downscale``; PSNR on the Y channel.

The reference code is **loaded at run time from the checkouts the user supplies**
(``--deepred-repo``: GaryMataev/DeepRED, ``--dip-repo``: DmitryUlyanov/deep-image-prior): the
notebooks' JSON is read, the cells that define what is needed are executed in a fresh namespace
with the repository on ``sys.path``, and the libraries' removed APIs are shimmed in memory
(``skimage.measure.compare_psnr``, ``denoise_nl_means(multichannel=…)``, ``PIL.Image.ANTIALIAS``,
removed numpy aliases, a ``torchvision`` import stub, ``.cuda()`` → CPU in the cell text).
Nothing of that code is copied into or shipped with this repository, and the checkouts are not
modified. Each side of each (task, image, seed) runs in its own subprocess of this script, so the
two repositories' ``models``/``utils`` packages never meet and timings are isolated.

Curves come from the reference code's own progress prints (captured from stdout as they are
written: DeepRED denoising ``avg``, SR ``psnr x-u``, DIP ``PSNR_gt_sm``) and from deeprestore's
log; final PSNRs of both sides' returned images are computed here with ``deeprestore.metrics``
(RGB for denoising, Y for SR). Timing: seconds per iteration of both sides, in the same
invocation, on short runs without a clean reference, after a warm-up, with the same torch thread
count.

This is a developer's benchmark, not part of the test suite; it needs the reference checkouts.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import functools
import inspect
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
WORKER_FLAG = "--_peer-worker"
TASKS = ("denoise", "dip", "superres")
SR_FACTOR = 4
#: Keyword arguments of DeepRED's denoising ``train_via_admm`` for each reference variant.
DENOISE_VARIANTS: dict[str, dict[str, Any]] = {
    "ref released": {},
    "ref Table 1": {"LR": 0.01, "increase_reg": 0},
}

# ---------------------------------------------------------------------------------------------
# Run-time shims for APIs that newer libraries removed (reference workers only, in memory)
# ---------------------------------------------------------------------------------------------


def _legacy_compare_psnr(im_true: np.ndarray, im_test: np.ndarray,
                         data_range: float | None = None) -> float:
    """``skimage.measure.compare_psnr`` of scikit-image < 0.18: (true, test) order; without a
    data range, 1 for float images that are ≥ 0 (2 if negative), the integer type's maximum."""
    from skimage.metrics import peak_signal_noise_ratio

    true, test = np.asarray(im_true), np.asarray(im_test)
    if data_range is None:
        negative = float(true.min()) < 0
        if np.issubdtype(true.dtype, np.integer):
            info = np.iinfo(true.dtype)
            data_range = float(info.max - info.min) if negative else float(info.max)
        else:
            data_range = 2.0 if negative else 1.0
    return float(peak_signal_noise_ratio(true, test, data_range=data_range))


_NUMPY_ALIASES = {"float": float, "int": int, "complex": complex, "object": object, "str": str,
                  "bool": bool}


def reference_text(repo: Path, cell_sources: list[str]) -> str:
    """The text of everything the reference worker may execute: its cells, models/, utils/."""
    parts = list(cell_sources)
    for package in ("models", "utils"):
        parts += [path.read_text(encoding="utf-8", errors="replace")
                  for path in sorted((repo / package).rglob("*.py"))]
    return "\n".join(parts)


def install_legacy_shims(text: str) -> list[str]:
    """Patch the removed APIs that ``text`` (the reference code to run) uses; return a note per
    shim installed."""
    applied: list[str] = []
    import skimage.measure
    import skimage.restoration

    if "compare_psnr" in text and not hasattr(skimage.measure, "compare_psnr"):
        skimage.measure.compare_psnr = _legacy_compare_psnr  # type: ignore[attr-defined]
        applied.append("skimage.measure.compare_psnr -> skimage.metrics.peak_signal_noise_ratio "
                       "(data_range 1 for float images >= 0, as the old default)")
    original_nlm = skimage.restoration.denoise_nl_means
    if "multichannel" in text and "multichannel" not in inspect.signature(
            original_nlm).parameters:

        @functools.wraps(original_nlm)
        def denoise_nl_means(image: np.ndarray, *args: Any, multichannel: bool | None = None,
                             **kwargs: Any) -> np.ndarray:
            if multichannel is not None and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1 if multichannel else None
            return original_nlm(image, *args, **kwargs)

        skimage.restoration.denoise_nl_means = denoise_nl_means
        applied.append("denoise_nl_means(multichannel=False) -> channel_axis=None")
    import PIL.Image

    if "ANTIALIAS" in text and not hasattr(PIL.Image, "ANTIALIAS"):
        PIL.Image.ANTIALIAS = PIL.Image.LANCZOS  # type: ignore[attr-defined]
        applied.append("PIL.Image.ANTIALIAS -> PIL.Image.LANCZOS")
    for name, value in _NUMPY_ALIASES.items():
        if re.search(rf"\bnp\.{name}\b(?!_)", text) and name not in np.__dict__:
            setattr(np, name, value)
            applied.append(f"np.{name} -> {value.__name__}")
    if re.search(r"^\s*import torchvision|^\s*from torchvision", text, re.MULTILINE):
        try:
            import torchvision  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torchvision")
            stub_utils = types.ModuleType("torchvision.utils")

            def make_grid(*_args: Any, **_kwargs: Any) -> Any:
                raise RuntimeError("torchvision is not installed (peer.py stubs its import "
                                   "only; plotting is disabled)")

            stub_utils.make_grid = make_grid  # type: ignore[attr-defined]
            stub.utils = stub_utils  # type: ignore[attr-defined]
            sys.modules["torchvision"] = stub
            sys.modules["torchvision.utils"] = stub_utils
            applied.append("torchvision (not installed): import stub, make_grid only (plots)")
    import matplotlib

    matplotlib.use("Agg")
    return applied


# ---------------------------------------------------------------------------------------------
# Reading notebooks and executing their cells
# ---------------------------------------------------------------------------------------------

#: Text substitutions applied (in memory) to notebook cells, so that GPU-only code runs on a CPU.
CPU_SUBSTITUTIONS = (("torch.cuda.FloatTensor", "torch.FloatTensor"), (".cuda()", ""))


def notebook_cells(path: Path) -> list[str]:
    """The sources of the code cells of the notebook at ``path``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in data.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            cells.append("".join(source) if isinstance(source, list) else str(source))
    return cells


def find_cell(cells: list[str], marker: str, path: Path) -> tuple[int, str]:
    """The first code cell (index, source) containing ``marker``."""
    for index, source in enumerate(cells):
        if marker in source:
            return index, source
    raise RuntimeError(f"{path}: no code cell contains {marker!r}: not the expected notebook?")


def runnable_source(source: str, substitutions: list[str]) -> str:
    """Cell text without IPython magics/shell lines, GPU calls replaced for a CPU."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    text = "\n".join(lines) + "\n"
    for old, new in CPU_SUBSTITUTIONS:
        if old in text:
            text = text.replace(old, new)
            note = f"cell text: {old!r} -> {new!r}"
            if note not in substitutions:
                substitutions.append(note)
    return text


def run_cell(namespace: dict[str, Any], path: Path, cells: list[str], marker: str,
             substitutions: list[str]) -> str:
    """Execute the cell of ``path`` containing ``marker`` in ``namespace``; return its source."""
    index, source = find_cell(cells, marker, path)
    text = runnable_source(source, substitutions)
    exec(compile(text, f"<{path.name} code cell {index}>", "exec"), namespace)
    return text


def reference_namespace(repo: Path) -> dict[str, Any]:
    """A fresh module-like namespace with ``repo`` first on sys.path (its models/utils)."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("models", "utils"):
            del sys.modules[name]
    sys.path.insert(0, str(repo))
    return {"__name__": "__peer_notebook__", "__builtins__": builtins}


def _no_plot(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for the notebooks' plotting functions."""


# ---------------------------------------------------------------------------------------------
# Capturing the reference code's progress prints
# ---------------------------------------------------------------------------------------------

_SPLIT = re.compile(r"([\r\n])")
_ITERATION = re.compile(r"(\d+)/(\d+)\s+Loss")
_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"


def _number(pattern: re.Pattern[str], line: str) -> float | None:
    match = pattern.search(line)
    return float(match.group(1)) if match else None


class ProgressTap(io.TextIOBase):
    """Stands in for stdout while the reference code runs: splits what it prints at ``\\r`` and
    ``\\n`` and hands each finished line, with the time its first character arrived, to
    ``on_line`` (nothing is kept but the current line)."""

    def __init__(self, on_line: Callable[[str, float], None]) -> None:
        super().__init__()
        self._on_line = on_line
        self._parts: list[str] = []
        self._started = 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for piece in _SPLIT.split(text):
            if piece in ("\r", "\n"):
                self.finish()
            elif piece:
                if not self._parts:
                    self._started = time.perf_counter()
                self._parts.append(piece)
        return len(text)

    def finish(self) -> None:
        """Hand over the line in progress, if any."""
        if self._parts:
            line, self._parts = "".join(self._parts), []
            if line.strip():
                self._on_line(line, self._started)


@dataclass
class RefProgress:
    """Turns the reference code's progress lines into a curve and per-iteration timestamps.

    Iterations come from ``NNNN/NNNN Loss`` (DeepRED) or, with ``count_prefix``, by counting the
    lines that start with it (DIP, whose printed counter stops on a backtrack). The value of
    ``value`` is kept at every ``every``-th iteration and the last one.
    """

    every: int
    total: int
    value: re.Pattern[str] | None = None
    count_prefix: str | None = None
    on_iteration: Callable[[int, str], None] | None = None
    on_other: Callable[[str], None] | None = None
    #: other printed PSNRs, recorded on the same iterations (name → pattern)
    extras: dict[str, re.Pattern[str]] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)
    extra_curves: dict[str, dict[int, float]] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)
    last: int = 0

    def __call__(self, line: str, started: float) -> None:
        if self.count_prefix is not None:
            if not line.lstrip().startswith(self.count_prefix):
                if self.on_other is not None:
                    self.on_other(line)
                return
            iteration = self.last + 1
        else:
            match = _ITERATION.search(line)
            if match is None:
                if self.on_other is not None:
                    self.on_other(line)
                return
            iteration = int(match.group(1))
        self.last = iteration
        self.times[iteration] = started
        if iteration % self.every == 0 or iteration == self.total:
            value = None if self.value is None else _number(self.value, line)
            if value is not None:
                self.curve[iteration] = value
            for name, pattern in self.extras.items():
                extra = _number(pattern, line)
                if extra is not None:
                    self.extra_curves.setdefault(name, {})[iteration] = extra
        if self.on_iteration is not None:
            self.on_iteration(iteration, line)


def _patterns(**labels: str) -> dict[str, re.Pattern[str]]:
    """Patterns for printed numbers: each label's text followed by a number."""
    return {name: re.compile(text + r"\s*" + _NUMBER) for name, text in labels.items()}


def seconds_per_iteration(times: dict[int, float], warmup: int, count: int) -> float | None:
    """Seconds per iteration between the ends of iterations ``warmup`` and ``warmup + count``."""
    start, end = times.get(warmup), times.get(warmup + count)
    if start is None or end is None or count <= 0:
        return None
    return (end - start) / count


def _plain_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """A function's keyword defaults that JSON can hold."""
    out: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        if default is not inspect.Parameter.empty and (
                default is None or isinstance(default, (bool, int, float, str))):
            out[name] = default
    return out


# ---------------------------------------------------------------------------------------------
# Workers (one subprocess per side of each run)
# ---------------------------------------------------------------------------------------------


def _chw32(array: np.ndarray) -> np.ndarray:
    """(H, W, C) → (C, H, W) float32, the reference code's numpy image layout."""
    return np.ascontiguousarray(np.asarray(array).transpose(2, 0, 1)).astype(np.float32)


def _save_image(array: np.ndarray, path: str) -> None:
    np.save(path, np.asarray(array, dtype=np.float32))


def _seed_all(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_deepred_notebook(repo: Path, notebook: str, markers: tuple[str, ...],
                           nlm_from_denoising: bool = False
                           ) -> tuple[dict[str, Any], list[str], list[str]]:
    """A namespace with the cells of ``notebook`` that contain ``markers`` run in order (the
    first is its import cell), on the CPU and without plots; with ``nlm_from_denoising`` also
    the denoising notebook's ``non_local_means``. Returns (namespace, shims, substitutions)."""
    path = repo / notebook
    cells = notebook_cells(path)
    sources = [find_cell(cells, m, path)[1] for m in markers]
    nlm_marker = "def non_local_means"
    denoising = repo / "denoising.ipynb"
    denoising_cells = notebook_cells(denoising) if nlm_from_denoising else []
    if nlm_from_denoising:
        sources.append(find_cell(denoising_cells, nlm_marker, denoising)[1])
    shims = install_legacy_shims(reference_text(repo, sources))
    namespace = reference_namespace(repo)
    substitutions: list[str] = []
    run_cell(namespace, path, cells, markers[0], substitutions)
    namespace["dtype"] = torch.FloatTensor  # the notebook's CPU branch (CUDA_FLAG = False)
    namespace["plot_dict"] = _no_plot
    for marker in markers[1:]:
        run_cell(namespace, path, cells, marker, substitutions)
    if nlm_from_denoising:
        run_cell(namespace, denoising, denoising_cells, nlm_marker, substitutions)
    return namespace, shims, substitutions


def worker_deepred_denoise(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """DeepRED's denoising notebook: its network, NLM and ``train_via_admm``."""
    repo = Path(spec["repo"])
    namespace, shims, substitutions = load_deepred_notebook(
        repo, "denoising.ipynb", ("from models.skip import skip", "def get_network_and_input",
                                  "def non_local_means", "def train_via_admm"))
    train = namespace["train_via_admm"]
    defaults = _plain_defaults(train)
    kwargs = {"admm_iter": spec["iterations"], **spec["ref_kwargs"]}
    noisy = _chw32(arrays["noisy"])
    clean = None if spec["timing"] else _chw32(arrays["clean"])

    # Replay the λ/µ growth rule from the printed PSNR(out, y) (two decimals: approximate).
    rule = {**defaults, **kwargs}
    growth = {"beta": float(rule.get("beta", 0.0)), "mu": float(rule.get("mu", 0.0)),
              "threshold": float(rule.get("threshold", 0.0)), "growths": 0, "first": None}
    noisy_psnr = re.compile(r"psnr_noisy:\s*" + _NUMBER)

    def grow(iteration: int, line: str) -> None:
        value = _number(noisy_psnr, line)
        if value is not None and value > growth["threshold"]:
            growth["beta"] += float(rule.get("increase_reg", 0.0))
            growth["mu"] += float(rule.get("increase_reg", 0.0))
            growth["threshold"] += float(rule.get("threshold_step", 0.0))
            growth["growths"] += 1
            growth["first"] = growth["first"] or iteration

    progress = RefProgress(spec["every"], spec["iterations"], re.compile(r"\bavg:\s*" + _NUMBER),
                           on_iteration=None if spec["timing"] else grow,
                           extras=_patterns(net=r"\bnet:", x=r"\bx:", x_minus_u=r"\bx-u:",
                                            out_vs_y=r"psnr_noisy:"))
    _seed_all(spec["seed"])
    net, net_input = namespace["get_network_and_input"](img_shape=noisy.shape)
    tap = ProgressTap(progress)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tap):
        avg = train(net, net_input, namespace["non_local_means"], noisy, org_img=clean,
                    plot_array={}, algorithm_name="", **kwargs)
        tap.finish()
    wall = time.perf_counter() - start
    _save_image(avg, spec["image_out"])
    info: dict[str, Any] = {"train_via_admm_defaults": defaults, "kwargs": kwargs,
                            "shims": shims + substitutions}
    if not spec["timing"]:
        info["growth_replayed"] = growth
    return {"curve": sorted(progress.curve.items()), "wall_s": wall, "iterations": progress.last,
            "printed": {k: sorted(v.items()) for k, v in progress.extra_curves.items()},
            "s_per_it": seconds_per_iteration(progress.times, spec["warmup"], spec["count"]),
            "info": info}


def _dip_branch(source: str) -> str:
    """The ``fname`` that selects the setup cell's branch which builds the net with get_net."""
    at = source.find("get_net(")
    names = [(m.start(), m.group(1)) for m in re.finditer(r"fname\s*==\s*['\"]([^'\"]+)", source)]
    before = [name for pos, name in names if pos < at]
    if at < 0 or not before:
        raise RuntimeError("DIP denoising notebook: no `fname == ...` branch with get_net(...)")
    return before[-1]


def worker_dip_denoise(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The DIP denoising notebook's setup and optimisation cells (closure, EMA, backtracking)."""
    import PIL.Image

    repo = Path(spec["repo"])
    path = repo / "denoising.ipynb"
    cells = notebook_cells(path)
    markers = ("from utils.denoising_utils import", "get_net(", "def closure")
    shims = install_legacy_shims(
        reference_text(repo, [find_cell(cells, m, path)[1] for m in markers]))
    namespace = reference_namespace(repo)
    substitutions: list[str] = []
    run_cell(namespace, path, cells, markers[0], substitutions)
    _, setup = find_cell(cells, "get_net(", path)
    clean = _chw32(arrays["clean"])
    noisy = _chw32(arrays["noisy"])
    height, width = clean.shape[1:]
    namespace.update(
        PLOT=False,
        plot_image_grid=_no_plot,
        fname=_dip_branch(setup),  # the branch of the colour denoising example (skip, depth 32)
        img_np=clean,
        img_pil=PIL.Image.new("RGB", (width, height)),  # only its .size is read
        img_noisy_np=noisy,
    )
    _seed_all(spec["seed"])
    run_cell(namespace, path, cells, "get_net(", substitutions)
    namespace["num_iter"] = spec["iterations"]
    fallbacks: list[int] = []
    progress = RefProgress(spec["every"], spec["iterations"],
                           re.compile(r"PSNR_gt_sm:\s*" + _NUMBER), count_prefix="Iteration",
                           extras=_patterns(net=r"PSRN_gt:", out_vs_y=r"PSNR_noisy:"))
    progress.on_other = lambda line: (fallbacks.append(progress.last)
                                      if "Falling back" in line else None)
    tap = ProgressTap(progress)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tap):
        run_cell(namespace, path, cells, "def closure", substitutions)
        tap.finish()
    wall = time.perf_counter() - start
    _save_image(namespace["out_avg"].detach().cpu().numpy()[0], spec["image_out"])
    setup_values = {k: namespace.get(k) for k in ("reg_noise_std", "LR", "exp_weight",
                                                  "input_depth", "show_every", "OPTIMIZER")}
    return {"curve": sorted(progress.curve.items()), "wall_s": wall, "iterations": progress.last,
            "printed": {k: sorted(v.items()) for k, v in progress.extra_curves.items()},
            "s_per_it": seconds_per_iteration(progress.times, spec["warmup"], spec["count"]),
            "info": {"setup": setup_values, "fname_branch": namespace["fname"],
                     "backtracks_at": fallbacks, "shims": shims + substitutions}}


def worker_deepred_superres(spec: dict[str, Any],
                            arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """DeepRED's SR notebook ``train_via_admm`` with the denoising notebook's NLM as f."""
    repo = Path(spec["repo"])
    namespace, shims, substitutions = load_deepred_notebook(
        repo, "super_resolution.ipynb",
        ("from models.skip import skip", "def get_network_and_input", "def train_via_admm"),
        nlm_from_denoising=True)
    train = namespace["train_via_admm"]
    hr = _chw32(arrays["hr"])
    lr_image = _chw32(arrays["lr"])
    bicubic = _chw32(arrays["bicubic"])
    kwargs = {"admm_iter": spec["iterations"]}
    progress = RefProgress(spec["every"], spec["iterations"],
                           re.compile(r"psnr x-u:\s*" + _NUMBER),
                           extras=_patterns(net=r"psnr net:"))
    _seed_all(spec["seed"])
    net, net_input = namespace["get_network_and_input"](img_shape=hr.shape)
    downsampler = namespace["Downsampler"](n_planes=lr_image.shape[0], factor=SR_FACTOR,
                                           kernel_type="lanczos2", phase=0.5,
                                           preserve_size=True).type(torch.FloatTensor)
    tap = ProgressTap(progress)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tap):
        result = train(net, net_input, namespace["non_local_means"], downsampler, lr_image,
                       bicubic, HR_img=None if spec["timing"] else hr, plot_array={},
                       algorithm_name="", **kwargs)
        tap.finish()
    wall = time.perf_counter() - start
    _save_image(result, spec["image_out"])
    return {"curve": sorted(progress.curve.items()), "wall_s": wall, "iterations": progress.last,
            "printed": {k: sorted(v.items()) for k, v in progress.extra_curves.items()},
            "s_per_it": seconds_per_iteration(progress.times, spec["warmup"], spec["count"]),
            "info": {"train_via_admm_defaults": _plain_defaults(train), "kwargs": kwargs,
                     "denoiser": "denoising.ipynb non_local_means",
                     "shims": shims + substitutions}}


def worker_ours(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """deeprestore's engine on the same inputs (preset ← the run's overrides ← --ours-set)."""
    from deeprestore.arrays import Image
    from deeprestore.config.presets import load_preset
    from deeprestore.solvers.base import Progress
    from deeprestore.solvers.runner import restore
    from deeprestore.tasks.options import TaskOptions
    from deeprestore.tasks.problem import build_problem

    preset = load_preset(spec["preset"])
    settings = preset.settings_for(spec["method"], spec["overrides"])
    options = TaskOptions(task=preset.task, **{**preset.degradation, **spec["degradation"]})
    observed = Image(np.asarray(arrays["observed"], dtype=np.float64))
    reference = None if spec["timing"] else Image(np.asarray(arrays["reference"],
                                                             dtype=np.float64))
    problem = build_problem(options, observed, reference).problem
    times: dict[int, float] = {}

    def on_progress(progress: Progress) -> None:
        times[progress.iteration] = time.perf_counter()

    start = time.perf_counter()
    result = restore(problem, settings, device="cpu", callback=on_progress)
    wall = time.perf_counter() - start
    _save_image(result.image[0].numpy(), spec["image_out"])
    every, total = spec["every"], settings.iterations
    curve = [(row.iteration, row.psnr) for row in result.log
             if row.psnr is not None and (row.iteration % every == 0 or row.iteration == total)]
    last_row = {k: v for k, v in vars(result.log[-1]).items()} if result.log else {}
    info = {"settings": settings.to_dict(), "preset": str(preset.path),
            "overrides": spec["overrides"], "last_log_row": last_row,
            "denoiser_calls": result.denoiser_calls, "rollbacks": result.rollbacks,
            "precision": result.precision,
            "backtracks": getattr(result, "backtracks", None)}
    return {"curve": curve, "wall_s": wall, "iterations": result.iterations,
            "s_per_it": seconds_per_iteration(times, spec["warmup"], spec["count"]),
            "info": info}


WORKERS: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray]], dict[str, Any]]] = {
    "ref-deepred-denoise": worker_deepred_denoise,
    "ref-dip-denoise": worker_dip_denoise,
    "ref-deepred-superres": worker_deepred_superres,
    "ours": worker_ours,
}


def worker_main(spec_path: str) -> int:
    """Entry point of a worker subprocess: run one side, write its result JSON."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    try:
        arrays = {name: np.load(p) for name, p in spec["arrays"].items()}
        out = WORKERS[spec["kind"]](spec, arrays)
        status = 0
    except Exception:
        out = {"error": traceback.format_exc()}
        status = 1
    Path(spec["out"]).write_text(json.dumps(out, default=str), encoding="utf-8")
    return status


# ---------------------------------------------------------------------------------------------
# The parent: inputs, runs, tables
# ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of a comparison row: a worker kind and what it needs."""

    name: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


def centre_crop(pixels: np.ndarray, size: int, where: str) -> np.ndarray:
    height, width = pixels.shape[:2]
    if size > min(height, width):
        raise SystemExit(f"{where}: {width}x{height} is smaller than the {size} px crop")
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(pixels[top:top + size, left:left + size])


def noisy_copy(clean: np.ndarray, sigma: float, image: str, seed: int) -> np.ndarray:
    """clip(clean + N(0, (σ/255)²), 0, 1) as float32, numpy seeded by (seed, image name)."""
    rng = np.random.default_rng([seed, zlib.crc32(image.encode())])
    noise = rng.normal(0.0, sigma / 255.0, size=clean.shape)
    return np.clip(clean + noise, 0.0, 1.0).astype(np.float32)


def psnr_of(image: np.ndarray, clean: np.ndarray, protocol: str) -> float:
    """PSNR of a (C, H, W) result against a (H, W, C) clean image with deeprestore's metric."""
    from deeprestore.metrics import psnr_rgb, psnr_y

    x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None]
    reference = torch.from_numpy(
        np.ascontiguousarray(clean.transpose(2, 0, 1)).astype(np.float32))[None]
    metric = psnr_rgb if protocol == "rgb" else psnr_y
    return float(metric(x, reference))


def git_commit(repo: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


class Runner:
    """Starts worker subprocesses in a work directory and collects their results."""

    def __init__(self, work: Path, threads: int) -> None:
        self.work = work
        self.threads = threads
        self.count = 0

    def save(self, label: str, name: str, array: np.ndarray) -> str:
        path = self.work / f"{label}.{name}.npy"
        np.save(path, array)
        return str(path)

    def run(self, label: str, spec: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        spec = {**spec, "threads": self.threads, "out": str(self.work / f"{safe}.out.json"),
                "image_out": str(self.work / f"{safe}.result.npy")}
        spec_path = self.work / f"{safe}.spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        log_path = self.work / f"{safe}.log"
        print(f"[peer] {label} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG,
                                   str(spec_path)], stdout=log, stderr=subprocess.STDOUT,
                                  env=env, cwd=self.work, check=False)
        wall = time.perf_counter() - start
        out_path = Path(spec["out"])
        if out_path.exists():
            result = json.loads(out_path.read_text(encoding="utf-8"))
        else:
            result = {"error": f"worker exited with status {done.returncode} and no result"}
        if "error" in result:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            result["log_tail"] = tail
            print(f" FAILED ({wall:.0f} s)\n{result['error']}", file=sys.stderr, flush=True)
        else:
            result["image"] = np.load(spec["image_out"])
            print(f" {wall:.0f} s", file=sys.stderr, flush=True)
        return result


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_ours_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``[TASK:]KEY=VALUE`` → overrides per task ("*" for every task)."""
    from deeprestore.config.presets import parse_override
    from deeprestore.config.settings import SettingsError

    out: dict[str, dict[str, Any]] = {"*": {}, **{task: {} for task in TASKS}}
    for item in items:
        head, sep, rest = item.partition("=")
        task = "*"
        if ":" in head and head.split(":", 1)[0].strip() in TASKS:
            task, head = (part.strip() for part in head.split(":", 1))
        try:
            key, value = parse_override(f"{head}{sep}{rest}")
        except SettingsError as err:
            raise SystemExit(f"--ours-set {item!r}: {err}") from None
        out[task][key] = value
    return out


def parse_variants(items: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``NAME:KEY=VALUE[,KEY=VALUE…]`` → (name, overrides) for extra deeprestore sides."""
    from deeprestore.config.presets import parse_override
    from deeprestore.config.settings import SettingsError

    variants = []
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or not name.strip() or not rest.strip():
            raise SystemExit(f"--variant {item!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        overrides: dict[str, Any] = {}
        for part in rest.split(","):
            try:
                key, value = parse_override(part.strip())
            except SettingsError as err:
                raise SystemExit(f"--variant {item!r}: {err}") from None
            overrides[key] = value
        variants.append((name.strip(), overrides))
    return variants


def log_grid(checkpoints: list[int], iterations: int) -> int:
    """Log/record every this many iterations: divides every checkpoint and the total."""
    return math.gcd(10, iterations, *checkpoints)


def task_checkpoints(given: list[int] | None, iterations: int) -> list[int]:
    if given is None:
        given = [iterations * k // 4 for k in range(1, 5)]
    points = sorted({c for c in given if 0 < c <= iterations})
    return points or [iterations]


def summarise(curve: list[list[float]], end: float, total: int) -> dict[str, Any]:
    points = {int(it): float(v) for it, v in curve}
    points[total] = end
    finite = {it: v for it, v in points.items() if math.isfinite(v)}
    peak_it = max(finite, key=lambda it: (finite[it], -it)) if finite else total
    peak = finite.get(peak_it, end)
    return {"peak": peak, "peak_at": peak_it, "drop": peak - end}


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the DeepRED/DIP authors' code (from local checkouts) and deeprestore "
                    "on the same inputs; print a side-by-side table.")
    parser.add_argument("--deepred-repo", type=Path,
                        help="checkout of GaryMataev/DeepRED (required unless --collect)")
    parser.add_argument("--collect", type=Path, metavar="WORK",
                        help="run nothing: print the tables of the finished runs in the --work "
                             "folder of an earlier (possibly interrupted) invocation")
    parser.add_argument("--dip-repo", type=Path, help="checkout of DmitryUlyanov/deep-image-prior")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with cbm3d9/ and set5/ (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="subset of denoise,dip,superres")
    parser.add_argument("--images", default="house,peppers", help="cbm3d9 images (denoise, dip)")
    parser.add_argument("--sr-images", default="butterfly", help="set5 images (superres)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise std, 0-255 scale")
    parser.add_argument("--crop", type=int, default=64, help="centre crop (px) for denoising")
    parser.add_argument("--sr-crop", type=int, default=128, help="HR centre crop (px), SR")
    parser.add_argument("--iters", type=int, default=1200, help="iterations, denoise and dip")
    parser.add_argument("--sr-iters", type=int, default=2000, help="iterations, superres")
    parser.add_argument("--checkpoints", default="300,600,900,1200",
                        help="iterations at which PSNRs are shown (denoise, dip)")
    parser.add_argument("--sr-checkpoints", default=None,
                        help="the same for superres (default: quarters of --sr-iters)")
    parser.add_argument("--log-every", type=int, default=None,
                        help="curve resolution (default: gcd of 10, checkpoints and iterations)")
    parser.add_argument("--timing-iters", type=int, default=30,
                        help="timed iterations per side (0: no timing)")
    parser.add_argument("--timing-warmup", type=int, default=5)
    parser.add_argument("--timing-repeats", type=int, default=1,
                        help="timing runs per side, alternating the order (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--denoise-preset", default="denoise")
    parser.add_argument("--sr-preset", default="superres-x4")
    parser.add_argument("--ours-set", action="append", default=[], metavar="[TASK:]KEY=VALUE",
                        help="extra deeprestore setting (repeatable; TASK: limits it to a task)")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
                        help="an extra deeprestore side with these settings on top of the "
                             "preset's, named 'ours NAME' (repeatable; for ablations)")
    parser.add_argument("--denoise-references", default=",".join(DENOISE_VARIANTS),
                        help="which DeepRED denoising reference variants to run "
                             "(default: %(default)s)")
    parser.add_argument("--no-ours", action="store_true",
                        help="skip the preset's own deeprestore side (only --variant sides; "
                             "for ablations beside an earlier run of the same inputs)")
    parser.add_argument("--no-reference", action="store_true",
                        help="run only deeprestore's sides (ours and --variant ones)")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--work", type=Path,
                        help="keep the workers' inputs, logs and results here (default: a "
                             "temporary folder, removed at the end)")
    return parser


def check_repo(repo: Path, files: tuple[str, ...], what: str) -> Path:
    repo = repo.expanduser().resolve()
    missing = [name for name in files if not (repo / name).exists()]
    if missing:
        raise SystemExit(f"{repo}: not a {what} checkout (missing {', '.join(missing)})")
    return repo


def collect(work: Path, args: argparse.Namespace) -> int:
    """The report of the finished workers in ``work`` (what an interrupted run had done)."""
    runs: list[dict[str, Any]] = []
    plan: dict[str, dict[str, Any]] = {}
    for spec_path in sorted(work.glob("*.spec.json")):
        label = spec_path.name[: -len(".spec.json")]
        match = re.fullmatch(r"(denoise|dip|superres)-(.+?)-s(\d+)-(.+)", label)
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        out = Path(spec["out"])
        if match is None or spec.get("timing") or not out.exists():
            continue
        task, image, seed, side = match.groups()
        result = json.loads(out.read_text(encoding="utf-8"))
        arrays = spec["arrays"]
        clean_path = arrays.get("reference") or arrays.get("hr") or arrays["clean"]
        iterations = int(spec["iterations"])
        given = args.sr_checkpoints if task == "superres" else args.checkpoints
        checkpoints = task_checkpoints(int_list(given) if given else None, iterations)
        plan.setdefault(task, {"iterations": iterations, "checkpoints": checkpoints,
                               "every": int(spec["every"])})
        row: dict[str, Any] = {"task": task, "image": image, "seed": int(seed),
                               "side": side.replace("_", " ")}
        if "error" in result:
            row["error"] = result["error"]
        else:
            end = psnr_of(np.load(spec["image_out"]), np.load(clean_path),
                          "y" if task == "superres" else "rgb")
            row.update(end=end, curve=result["curve"], wall_s=result["wall_s"],
                       printed=result.get("printed", {}), iterations=result["iterations"],
                       info=result["info"], **summarise(result["curve"], end, iterations))
        runs.append(row)
    tasks = [task for task in TASKS if task in plan]
    if not tasks:
        raise SystemExit(f"{work}: no finished runs")
    print_report(tasks, plan, runs, [], args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.collect is not None:
        return collect(args.collect, args)
    if args.deepred_repo is None:
        raise SystemExit("--deepred-repo is required (or --collect WORK)")
    tasks = name_list(args.tasks)
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    deepred_needed = tuple(n for t, n in (("denoise", "denoising.ipynb"),
                                          ("superres", "super_resolution.ipynb"),
                                          ("superres", "denoising.ipynb")) if t in tasks)
    deepred = check_repo(args.deepred_repo, (*deepred_needed, "models", "utils"), "DeepRED")
    dip_repo = None
    if "dip" in tasks:
        if args.dip_repo is None:
            print("[peer] no --dip-repo: skipping the dip task", file=sys.stderr)
            tasks.remove("dip")
        else:
            dip_repo = check_repo(args.dip_repo, ("denoising.ipynb", "models", "utils"), "DIP")
    if args.sr_crop % SR_FACTOR:
        raise SystemExit(f"--sr-crop must be a multiple of {SR_FACTOR}, got {args.sr_crop}")
    seeds = int_list(args.seeds)
    ours_sets = parse_ours_sets(args.ours_set)
    variants = parse_variants(args.variant)
    references = [name.strip() for name in args.denoise_references.split(",") if name.strip()]
    for name in references:
        if name not in DENOISE_VARIANTS:
            raise SystemExit(f"unknown --denoise-references {name!r} "
                             f"(known: {', '.join(DENOISE_VARIANTS)})")

    from deeprestore.config.presets import load_preset
    from deeprestore.io.images import read_image
    from deeprestore.physics.degradations import bicubic_upscale, lanczos_downscale

    sr_preset = load_preset(args.sr_preset) if "superres" in tasks else None
    if sr_preset is not None and sr_preset.degradation.get("factor", SR_FACTOR) != SR_FACTOR:
        raise SystemExit(f"preset {args.sr_preset}: factor must be {SR_FACTOR} for this check")
    load_preset(args.denoise_preset)  # fail early on a bad name

    plan: dict[str, dict[str, Any]] = {}
    for task in tasks:
        iterations = args.sr_iters if task == "superres" else args.iters
        given = args.sr_checkpoints if task == "superres" else args.checkpoints
        checkpoints = task_checkpoints(int_list(given) if given else None, iterations)
        every = args.log_every or log_grid(checkpoints, iterations)
        plan[task] = {"iterations": iterations, "checkpoints": checkpoints, "every": every}

    work = args.work or Path(tempfile.mkdtemp(prefix="peer-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work, args.threads)
    runs: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []

    def ours_spec(task: str, seed: int, iterations: int, every: int, timing_run: bool,
                  arrays: dict[str, str]) -> dict[str, Any]:
        method = "dip" if task == "dip" else "deepred"
        overrides: dict[str, Any] = {"iterations": iterations, "seed": seed, "runs": 1,
                                     "log_every": 1 if timing_run else every}
        degradation: dict[str, Any] = {}
        if task == "superres":
            overrides.update(denoiser="nlm", sigma_f=5.0)
        else:
            degradation["sigma"] = args.sigma
        overrides.update(ours_sets["*"])
        overrides.update(ours_sets[task])
        return {"kind": "ours", "preset": args.sr_preset if task == "superres"
                else args.denoise_preset, "method": method, "overrides": overrides,
                "degradation": degradation, "arrays": arrays}

    def sides(task: str) -> list[Side]:
        """The reference sides (unless --no-reference), then ours and its --variant sides."""
        mine = [*([] if args.no_ours else [Side("ours", "ours")]),
                *(Side(f"ours {name}", "ours", {"variant": overrides})
                  for name, overrides in variants)]
        if args.no_reference:
            return mine
        if task == "denoise":
            return [*(Side(name, "ref-deepred-denoise", {"repo": str(deepred), "ref_kwargs": kw})
                      for name, kw in DENOISE_VARIANTS.items() if name in references), *mine]
        if task == "dip":
            return [Side("ref", "ref-dip-denoise", {"repo": str(dip_repo)}), *mine]
        return [Side("ref", "ref-deepred-superres", {"repo": str(deepred)}), *mine]

    def inputs(task: str, image: str, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Arrays (H, W, C) for the workers, and the clean image for the PSNR."""
        if task == "superres":
            path = args.data / "set5" / f"{image}.png"
            hr = centre_crop(read_image(path).pixels, args.sr_crop, str(path))
            lr_image = lanczos_downscale(hr, SR_FACTOR)
            return {"hr": hr, "lr": lr_image,
                    "bicubic": bicubic_upscale(lr_image, SR_FACTOR)}, hr
        path = args.data / "cbm3d9" / f"{image}.png"
        clean = centre_crop(read_image(path).pixels, args.crop, str(path))
        return {"clean": clean, "noisy": noisy_copy(clean, args.sigma, image, seed)}, clean

    def side_spec(task: str, side: Side, seed: int, iterations: int, every: int,
                  timing_run: bool, paths: dict[str, str]) -> dict[str, Any]:
        if side.kind == "ours":
            if task == "superres":
                mine = {"observed": paths["lr"], "reference": paths["hr"]}
            else:
                mine = {"observed": paths["noisy"], "reference": paths["clean"]}
            spec = ours_spec(task, seed, iterations, every, timing_run, mine)
            spec["overrides"].update(side.extra.get("variant", {}))
        else:
            spec = {"kind": side.kind, "arrays": paths, **side.extra}
        warmup = args.timing_warmup if timing_run else 0
        return {**spec, "seed": seed, "iterations": iterations, "every": every,
                "timing": timing_run, "warmup": warmup,
                "count": args.timing_iters if timing_run else 0}

    try:
        for task in tasks:
            task_plan = plan[task]
            images = name_list(args.sr_images if task == "superres" else args.images)
            task_plan["images"] = images
            for image in images:
                for seed in seeds:
                    arrays, clean = inputs(task, image, seed)
                    label = f"{task}-{image}-s{seed}"
                    paths = {name: runner.save(label, name, a) for name, a in arrays.items()}
                    protocol = "y" if task == "superres" else "rgb"
                    for side in sides(task):
                        spec = side_spec(task, side, seed, task_plan["iterations"],
                                         task_plan["every"], False, paths)
                        result = runner.run(f"{label}-{side.name}", spec)
                        row: dict[str, Any] = {"task": task, "image": image, "seed": seed,
                                               "side": side.name}
                        if "error" in result:
                            row.update(error=result["error"], log_tail=result.get("log_tail"))
                        else:
                            end = psnr_of(result.pop("image"), clean, protocol)
                            row.update(end=end, curve=result["curve"], wall_s=result["wall_s"],
                                       printed=result.get("printed", {}),
                                       iterations=result["iterations"], info=result["info"],
                                       **summarise(result["curve"], end,
                                                   task_plan["iterations"]))
                        runs.append(row)
            if args.timing_iters > 0 and not args.no_reference and not args.no_ours:
                total = args.timing_warmup + args.timing_iters
                arrays, _ = inputs(task, images[0], 0)
                label = f"timing-{task}-{images[0]}"
                paths = {name: runner.save(label, name, a) for name, a in arrays.items()}
                everyone = sides(task)
                ours_side = next(side for side in everyone if side.name == "ours")
                pair = [everyone[0], ours_side]  # the released reference (or a variant), ours
                samples: dict[str, list[float]] = {side.name: [] for side in pair}
                for repeat in range(args.timing_repeats):
                    for side in pair if repeat % 2 == 0 else pair[::-1]:
                        spec = side_spec(task, side, 0, total, 1, True, paths)
                        result = runner.run(f"{label}-{side.name}-r{repeat}", spec)
                        if result.get("s_per_it") is not None:
                            samples[side.name].append(result["s_per_it"])
                ref_s = statistics.median(samples[pair[0].name]) if samples[pair[0].name] else None
                our_s = statistics.median(samples["ours"]) if samples["ours"] else None
                size = args.sr_crop if task == "superres" else args.crop
                timing.append({"task": task, "image": images[0], "size": size,
                               "reference_side": pair[0].name, "iterations": args.timing_iters,
                               "warmup": args.timing_warmup, "threads": args.threads,
                               "ours_s_per_it": our_s, "ref_s_per_it": ref_s,
                               "samples": samples,
                               "ratio": our_s / ref_s if our_s and ref_s else None})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    report = print_report(tasks, plan, runs, timing, args)
    if args.json:
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "plan": plan,
            "references": {"deepred": {"repo": str(deepred), "commit": git_commit(deepred)},
                           "dip": {"repo": str(dip_repo), "commit": git_commit(dip_repo)}
                           if dip_repo else None},
            "versions": versions(),
            "runs": runs,
            "summary": report,
            "timing": timing,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        print(f"\n(JSON written to {args.json})")
    return 1 if any("error" in row for row in runs) else 0


def versions() -> dict[str, str]:
    import PIL
    import skimage

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "scikit-image": skimage.__version__,
            "pillow": PIL.__version__}


def print_report(tasks: list[str], plan: dict[str, dict[str, Any]], runs: list[dict[str, Any]],
                 timing: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the markdown tables; return the summary rows."""
    titles = {
        "denoise": f"denoise: DeepRED (NLM), σ = {args.sigma:g}, {args.crop} px, RGB PSNR",
        "dip": f"dip: DIP denoising, σ = {args.sigma:g}, {args.crop} px, RGB PSNR of the EMA",
        "superres": f"superres: DeepRED (NLM σ_f 5) ×{SR_FACTOR}, {args.sr_crop} px HR, Y PSNR",
    }
    for task in tasks:
        task_plan = plan[task]
        checkpoints = task_plan["checkpoints"]
        print(f"\n### {titles[task]}, {task_plan['iterations']} iterations "
              f"(peak over every {task_plan['every']} it)\n")
        header = ["image", "seed", "side", *(f"@{c}" for c in checkpoints), "end",
                  "peak (it)", "drop"]
        rows = []
        for run in (r for r in runs if r["task"] == task):
            if "error" in run:
                rows.append([run["image"], str(run["seed"]), run["side"],
                             *("—" for _ in checkpoints), "FAILED", "—", "—"])
                continue
            curve = {int(it): v for it, v in run["curve"]}
            rows.append([run["image"], str(run["seed"]), run["side"],
                         *(fmt(curve.get(c)) for c in checkpoints), fmt(run["end"]),
                         f"{fmt(run['peak'])} ({run['peak_at']})", fmt(run["drop"])])
        print(markdown_table(header, rows))
        notes = []
        for run in (r for r in runs if r["task"] == task and "error" not in r):
            growth = run["info"].get("growth_replayed")
            if growth and growth["growths"]:
                notes.append(f"{run['image']} s{run['seed']} {run['side']}: λ = µ ≈ "
                             f"{growth['beta']:.2f} at the end ({growth['growths']} growths, "
                             f"first at it {growth['first']}; replayed from printed PSNRs)")
            printed = {name: points[-1] for name, points in run.get("printed", {}).items()
                       if points}
            if printed:
                shown = ", ".join(f"{name} {fmt(v)}" for name, (_, v) in printed.items())
                notes.append(f"{run['image']} s{run['seed']} {run['side']}: its other printed "
                             f"PSNRs at the end: {shown}")
            if run["info"].get("backtracks_at"):
                notes.append(f"{run['image']} s{run['seed']} {run['side']}: backtracked at "
                             f"{run['info']['backtracks_at']}")
            if run["side"] == "ours" and run["info"].get("backtracks"):
                notes.append(f"{run['image']} s{run['seed']} ours: "
                             f"{len(run['info']['backtracks'])} backtracks")
        for note in notes:
            print(f"- {note}")

    summary: list[dict[str, Any]] = []
    print("\n### Summary: mean end PSNR (dB)\n")
    rows = []
    for task in tasks:
        task_runs = [r for r in runs if r["task"] == task and "error" not in r]
        ours = {(r["image"], r["seed"]): r["end"] for r in task_runs if r["side"] == "ours"}
        names = list(dict.fromkeys(r["side"] for r in task_runs))
        for name in names:
            mine = {(r["image"], r["seed"]): r["end"] for r in task_runs if r["side"] == name}
            paired = [ours[k] - v for k, v in mine.items() if k in ours]
            entry = {"task": task, "side": name, "runs": len(mine),
                     "mean_end": statistics.fmean(mine.values()),
                     "ours_minus_side": None if name == "ours" or not paired
                     else statistics.fmean(paired)}
            summary.append(entry)
            rows.append([task, name, str(entry["runs"]), fmt(entry["mean_end"]),
                         "" if name == "ours" else fmt(entry["ours_minus_side"])])
    print(markdown_table(["task", "side", "runs", "mean end", "ours − side (paired)"], rows))

    if timing:
        print(f"\n### Timing: seconds per iteration ({args.threads} torch threads, "
              f"{args.timing_iters} it after {args.timing_warmup} warm-up, no clean reference)\n")
        rows = [[t["task"], f"{t['size']} px", t["reference_side"], fmt(t["ours_s_per_it"], 4),
                 fmt(t["ref_s_per_it"], 4), fmt(t["ratio"])] for t in timing]
        print(markdown_table(["task", "size", "reference", "s/it ours", "s/it theirs",
                              "ours/theirs"], rows))
        if "dip" in tasks:
            print("- dip: the DIP closure always computes its 3 PSNRs per iteration (as released)")
    return summary


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WORKER_FLAG:
        sys.exit(worker_main(sys.argv[2]))
    sys.exit(main())
