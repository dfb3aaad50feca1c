"""Seconds per iteration of every method on the real engine, and where the time goes.

    python bench/speed.py [--device cpu|cuda] [--sizes 64,128,256,512] [--iters N]
                          [--warmup W] [--repeats R] [--methods ...] [--precisions ...]
                          [--json PATH]

For each size it builds a synthetic denoising problem (scikit-image's ``astronaut`` resized, σ = 25
noise, fixed seed) and runs each method through :func:`deeprestore.solvers.runner.restore` for
``warmup + iters`` iterations. The warm-up iterations are discarded: the time per iteration is
measured between the progress events at iteration ``warmup`` and at the end, and the median over
``repeats`` runs is reported, with the ratio to ``dip`` **measured in the same run**: the median
over repeats of each repeat's ratio to that repeat's ``dip`` (every other repeat runs the methods
in reverse order); the JSON keeps every repeat's seconds and ratio. Peak memory:
CUDA max allocated on a GPU, the process's peak RSS (VmHWM, reset before each method) on a CPU.

It also times the pieces alone: one network step (forward + backward + Adam), one denoiser call
per denoiser, and the x/u updates.

Methods: ``dip``, ``dip-tv``, ``deepred-nlm``, ``deepred-bm3d`` (sync), ``deepred-nlm-async``,
``deepred-bm3d-async``, ``red``, ``dip-runs2`` (``--runs 2``; on a CPU the two runs step side
by side), ``dip-runs2-lockstep`` (the same, one run after the other), ``dip-runs2-grouped`` (the
same as one grouped-convolution network, ``Execution(grouped=True)``), ``dip-unfused``
(Adam one parameter at a time instead of torch's fused kernel), ``dip-channels-last`` and
``dip-runs2-channels-last`` / ``dip-nchw`` (the CPU network channels-last / NCHW whatever the
precision; by default the layout follows it: channels-last for bf16, NCHW for float32),
``dip-bf16``, ``dip-bf16-nchw`` and ``deepred-nlm-bf16`` (in bf16 whatever ``--precisions``
says, to set bf16 against float32 in one interleaved run), ``deepred-nlm-torch`` /
``deepred-bm3d-torch`` (the torch denoisers) and ``dip-compile`` (``--compile``; its compilation
falls in the warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from deeprestore.config.settings import Settings
from deeprestore.denoisers import get_denoiser
from deeprestore.execution import (
    DEFAULT_EXECUTION,
    Execution,
    configure_backends,
    prepare_network_step,
)
from deeprestore.metrics import psnr_rgb
from deeprestore.models.skip import SkipNet
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Algorithm, Problem, Progress, problem_to_device
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.runner import restore
from deeprestore.solvers.updates import dual_update, fixed_point_update

EXECUTION = "execution"  # not a setting: changes to the Execution options of the run
LOCK_STEP = {EXECUTION: {"side_by_side": False}}
UNFUSED = {EXECUTION: {"fused_adam": False}}
CHANNELS_LAST = {EXECUTION: {"cpu_channels_last": True}}
NCHW = {EXECUTION: {"cpu_channels_last": False}}
BF16 = {"precision": "bf16"}  # a row in bf16 whatever --precisions says (one interleaved run)
GROUPED = {EXECUTION: {"grouped": True}}

METHODS: dict[str, dict[str, Any]] = {
    "dip": {"method": "dip"},
    "dip-tv": {"method": "dip-tv", "tv_weight": 0.01},
    "deepred-nlm": {"method": "deepred", "denoiser": "nlm", "sigma_f": 3.0},
    "deepred-nlm-async": {"method": "deepred", "denoiser": "nlm", "sigma_f": 3.0,
                          "denoiser_mode": "async"},
    "deepred-bm3d": {"method": "deepred", "denoiser": "bm3d", "sigma_f": 5.0},
    "deepred-bm3d-async": {"method": "deepred", "denoiser": "bm3d", "sigma_f": 5.0,
                           "denoiser_mode": "async"},
    "deepred-nlm-torch": {"method": "deepred", "denoiser": "nlm-torch", "sigma_f": 3.0},
    "deepred-bm3d-torch": {"method": "deepred", "denoiser": "bm3d-torch", "sigma_f": 5.0},
    "red": {"method": "red", "denoiser": "nlm", "sigma_f": 15.0, "lam": 2.0},
    "dip-runs2": {"method": "dip", "runs": 2},
    "dip-runs2-lockstep": {"method": "dip", "runs": 2, **LOCK_STEP},
    "dip-runs2-grouped": {"method": "dip", "runs": 2, **GROUPED},
    "dip-unfused": {"method": "dip", **UNFUSED},
    "dip-channels-last": {"method": "dip", **CHANNELS_LAST},
    "dip-nchw": {"method": "dip", **NCHW},
    "dip-bf16": {"method": "dip", **BF16},
    "dip-bf16-nchw": {"method": "dip", **BF16, **NCHW},
    "deepred-nlm-bf16": {"method": "deepred", "denoiser": "nlm", "sigma_f": 3.0, **BF16},
    "dip-runs2-channels-last": {"method": "dip", "runs": 2, **CHANNELS_LAST},
    "dip-compile": {"method": "dip", "compile": True},
}
DEFAULT_METHODS = ("dip,dip-tv,deepred-nlm,deepred-bm3d,deepred-bm3d-async,red,dip-runs2,"
                   "dip-runs2-lockstep")


def make_problem(size: int, sigma: float = 25.0, seed: int = 0,
                 image: str = "astronaut") -> Problem:
    """A (1, 3, size, size) denoising problem with its clean reference: scikit-image's
    ``image`` resized, plus N(0, σ²) noise (σ on the 0–255 scale)."""
    from skimage import data
    from skimage.transform import resize

    clean = resize(getattr(data, image)() / 255.0, (size, size), anti_aliasing=True)
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, sigma / 255.0, clean.shape), 0, 1)

    def to(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None]

    y = to(noisy)
    return Problem(y, Identity(), y.clone(), sigma, to(clean), psnr_rgb)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_method(problem: Problem, overrides: dict[str, Any], device: torch.device, iters: int,
                warmup: int, precision: str,
                base: Execution = DEFAULT_EXECUTION) -> tuple[float, float, float]:
    """(seconds per iteration after warm-up, peak MiB, final PSNR) of one engine run."""
    overrides, execution = _split(overrides, base)
    settings = _settings(overrides, warmup + iters, warmup, precision)
    stamps: dict[int, float] = {}

    def on_progress(event: Progress) -> None:
        stamps[event.iteration] = time.perf_counter()

    _reset_peak(device)
    result = restore(problem, settings, device=device, callback=on_progress, execution=execution)
    _sync(device)
    seconds = (stamps[warmup + iters] - stamps[warmup]) / iters
    psnr = float(psnr_rgb(result.image, problem.reference)) if problem.reference is not None else 0
    return seconds, _peak_mib(device), psnr


def _split(row: dict[str, Any], base: Execution) -> tuple[dict[str, Any], Execution]:
    """A method row's settings, and the execution options it asks for (``base`` changed)."""
    overrides = dict(row)
    return overrides, dataclasses.replace(base, **overrides.pop(EXECUTION, {}))


def _settings(overrides: dict[str, Any], iterations: int, log_every: int,
              precision: str) -> Settings:
    """Benchmark settings for one method row (its engine switches split off already)."""
    return Settings(iterations=iterations, log_every=log_every,
                    **{"precision": precision, "lr": 0.01, "sigma_noise": 0.033, "lam": 0.5,
                       "mu": 0.5, **overrides})


def build_algorithms(problem: Problem, names: list[str], device: torch.device, iterations: int,
                     precision: str,
                     base: Execution = DEFAULT_EXECUTION) -> dict[str, Algorithm]:
    """Each method's engine algorithm on ``device``, built as ``restore`` builds it (backends,
    problem on the device, the method row's settings and execution options)."""
    configure_backends(device, precision)
    moved = problem_to_device(problem, device)
    algorithms = {}
    for name in names:
        overrides, execution = _split(METHODS[name], base)
        settings = _settings(overrides, iterations, iterations, precision).validate()
        algorithms[name] = make_algorithm(moved, settings, device, execution=execution)
    return algorithms


def time_interleaved(problem: Problem, names: list[str], device: torch.device, iters: int,
                     warmup: int, precision: str,
                     base: Execution = DEFAULT_EXECUTION) -> dict[str, tuple[float, float]]:
    """Every method's algorithm built at once and stepped in turn, one iteration each.

    Returns {method: (seconds per iteration after warm-up, final PSNR)}. Each round steps every
    method once (the order rotates by one method per round), so all methods see the machine in
    the same state, minute by minute: the ratios are not moved by a machine whose speed drifts.
    Peak memory is not separable here. Not for ``async`` methods (their background worker
    would run during the other methods' steps).
    """
    asynchronous = [n for n in names if METHODS[n].get("denoiser_mode") == "async"]
    if asynchronous:
        raise SystemExit(f"--interleave cannot time async methods: {', '.join(asynchronous)}")
    algorithms = build_algorithms(problem, names, device, warmup + iters, precision, base)
    spent = dict.fromkeys(names, 0.0)
    try:
        for iteration in range(warmup + iters):
            shift = iteration % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(device)
                start = time.perf_counter()
                algorithms[name].update()
                _sync(device)
                if iteration >= warmup:
                    spent[name] += time.perf_counter() - start
        out = {}
        for name, algorithm in algorithms.items():
            estimate = algorithm.estimate().detach().float().clamp(0, 1).cpu()
            reference = problem.reference
            psnr = float(psnr_rgb(estimate, reference)) if reference is not None else 0.0
            out[name] = (spent[name] / iters, psnr)
        return out
    finally:
        for algorithm in algorithms.values():
            algorithm.close()


def time_pieces(size: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds of the pieces alone: a network step, denoiser calls, x/u updates."""
    torch.manual_seed(0)
    net, z, optimizer = prepare_network_step(  # as the engine lays it out
        SkipNet(32, 3).to(device), torch.randn(1, 32, size, size, device=device) * 0.1, 0.01,
        device)
    y = torch.rand(1, 3, size, size, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = ((net(z) - y) ** 2).mean()
        loss.backward()
        optimizer.step()

    def timed(fn: Callable[[], object], n: int) -> float:
        fn()
        _sync(device)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    pieces = {"network step": timed(step, max(repeats, 3))}
    x = y.clone()
    for name in ("nlm", "bm3d", "nlm-torch", "bm3d-torch"):
        denoiser = get_denoiser(name)
        try:
            pieces[f"denoiser {name}"] = timed(lambda d=denoiser: d(x, 5.0), repeats)
        except ImportError:
            continue
    u = torch.zeros_like(x)
    pieces["x/u updates"] = timed(
        lambda: dual_update(u, fixed_point_update(x, y, u, 0.5, 0.5), y), 20
    )
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--precisions", default="float32")
    parser.add_argument("--no-pieces", action="store_true")
    parser.add_argument("--no-core-sharing", action="store_true",
                        help="async mode: keep all torch threads while a CPU denoiser runs")
    parser.add_argument("--interleave", action="store_true",
                        help="step all methods' algorithms in turn, one iteration each, so "
                             "they share the machine's state (ratios; no peak memory)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    base = Execution(share_cores=not args.no_core_sharing)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    if "dip" not in names:
        names.insert(0, "dip")
    rows: list[dict[str, Any]] = []
    pieces: dict[int, dict[str, float]] = {}
    console = Console()
    for size in (int(s) for s in args.sizes.split(",")):
        problem = make_problem(size)
        for precision in args.precisions.split(","):
            measured: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
            for repeat in range(args.repeats):
                if args.interleave:
                    timed = time_interleaved(problem, names, device, args.iters, args.warmup,
                                             precision, base)
                    for name, (seconds, psnr) in timed.items():
                        measured[name].append((seconds, 0.0, psnr))
                    continue
                # Every other repeat in reverse order, so a machine that speeds up or slows down
                # during the run does not favour the methods timed first.
                for name in names if repeat % 2 == 0 else names[::-1]:
                    measured[name].append(time_method(problem, METHODS[name], device, args.iters,
                                                      args.warmup, precision, base))
            for name in names:
                each = [t for t, _, _ in measured[name]]
                # The ratio to dip: the median of each repeat's own ratio (same minute, same load).
                ratios = [t / d for t, (d, _, _) in zip(each, measured["dip"], strict=True)]
                rows.append({
                    "size": size, "method": name,
                    "precision": METHODS[name].get("precision", precision),
                    "seconds_per_iter": statistics.median(each),
                    "ratio_to_dip": statistics.median(ratios),
                    "seconds_each": each, "ratios_each": ratios,
                    "peak_mib": None if args.interleave else max(m for _, m, _ in measured[name]),
                    "psnr": measured[name][-1][2],
                })
            console.print(f"size {size} {precision}: done", style="dim")
            if args.json:  # after every block, so a run cut short keeps what it measured
                _write_json(args.json, args, device, rows, pieces)
        if not args.no_pieces:
            pieces[size] = time_pieces(size, device, max(args.repeats, 2))
    table = Table(title=f"seconds per iteration on {device} (torch {torch.__version__}, "
                        f"{args.iters} timed iterations after {args.warmup} warm-up)")
    for col in ("size", "method", "precision", "s / it", "× dip", "peak MiB", "PSNR"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["size"]), r["method"], r["precision"], f"{r['seconds_per_iter']:.4f}",
                      f"{r['ratio_to_dip']:.2f}",
                      "–" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}", f"{r['psnr']:.2f}")
    console.print(table)
    if pieces:
        ptable = Table(title="pieces alone (seconds per call)")
        ptable.add_column("size", justify="right")
        ptable.add_column("piece")
        ptable.add_column("seconds", justify="right")
        for size, items in pieces.items():
            for piece, seconds in items.items():
                ptable.add_row(str(size), piece, f"{seconds:.4f}")
        console.print(ptable)
    if args.json:
        _write_json(args.json, args, device, rows, pieces)


def _write_json(path: Path, args: argparse.Namespace, device: torch.device,
                rows: list[dict[str, Any]], pieces: dict[int, dict[str, float]]) -> None:
    info = {"device": str(device), "torch": torch.__version__, "date": str(date.today()),
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "iters": args.iters, "warmup": args.warmup,
            "repeats": args.repeats, "interleave": args.interleave}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    path.write_text(json.dumps({"info": info, "rows": rows,
                                "pieces": {str(k): v for k, v in pieces.items()}}, indent=2))


if __name__ == "__main__":
    main()
