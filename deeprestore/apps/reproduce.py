"""``deeprestore reproduce``: the DeepRED paper's tables with one command, plus pictures.

The tables, their images, protocols and the paper's numbers are in ``benchmarks.toml`` (next to
this file). For each image of a table, :func:`reproduce_table` degrades the clean image in memory
as the paper did (fixed seed per image), restores it with every method of the table through
:class:`~deeprestore.io.jobs.Job`, and writes::

    OUT/TABLE/results.csv        one row per (image, method): psnr, ssim, seconds, ...
    OUT/TABLE/results.md         averages and per-image numbers next to the paper's
    OUT/TABLE/IMAGE/clean.png    the reference (superres: the HR crop, a multiple of the factor)
    OUT/TABLE/IMAGE/input.png    the degraded input (8-bit PNG; superres: the LR image)
    OUT/TABLE/IMAGE/mask.png     inpainting only: 255 = known pixel
    OUT/TABLE/IMAGE/input.json   the degradation record and the input's own PSNR/SSIM
    OUT/TABLE/IMAGE/input_METHOD.{png,csv,json}   each method's output, log and manifest
    OUT/TABLE/IMAGE/grid.png     input, every method's output and the reference, PSNR in titles
    OUT/results.md               with TABLE = "all": every table's results.md in turn

Resuming: an (image, method) whose manifest exists and was made with the same settings and the
same degraded input is skipped unless ``force``; results are rebuilt from the files on disk.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeprestore import __version__
from deeprestore.apps.degrade import degrade_pixels
from deeprestore.config.presets import DEGRADATION_KEYS, load_preset
from deeprestore.config.resolve import SettingsResolver
from deeprestore.io.images import Image, read_image
from deeprestore.io.jobs import (
    Job,
    JobError,
    load_checkpoint,
    record_failure,
    run_job,
    run_jobs_together,
)
from deeprestore.io.plots import compare_image
from deeprestore.io.writers import atomic_write_bytes, write_image, write_json
from deeprestore.methods import ITERATIVE_METHODS, NETWORK_METHODS, TASK_METHODS
from deeprestore.metrics import ssim
from deeprestore.solvers.base import Progress as EngineProgress
from deeprestore.solvers.base import problem_to_device
from deeprestore.solvers.control import Interrupted, OutOfTime
from deeprestore.solvers.cost import CostError, estimate_cost, format_duration
from deeprestore.tasks import TaskOptions, build_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The paper's tables, in the order ``all`` runs them.
TABLES = ("denoise", "superres-x4", "superres-x8", "deblur-uniform", "deblur-gauss", "inpaint")
ALL = "all"
#: The row of the degraded input itself (noisy / blurred / masked), measured without restoring.
INPUT_ROW = "input"
#: How the denoisers are named in labels (``{denoiser}`` in benchmarks.toml).
DENOISER_LABELS = {"nlm": "NLM", "bm3d": "BM3D", "nlm-torch": "NLM, torch",
                   "bm3d-torch": "BM3D, torch"}
CSV_FIELDS = ("image", "method", "psnr", "ssim", "seconds", "iterations", "device", "set",
              "status", "paper_psnr")
_PROTOCOL_TEXT = {
    "rgb": "RGB, data range 1, no border crop",
    "y": "8-bit Y channel (both images quantised to 8 bits), peak 255, no border crop",
}


class ReproduceError(ValueError):
    """A reproduce request that cannot run: unknown table, method or image (one line)."""


class BudgetSpent(Exception):
    """``--budget-minutes`` ran out: the pair in progress saved a checkpoint (if it was a
    network method) and rerunning the same command continues (one-line message)."""


#: the clock of ``budget_minutes`` (seconds; tests replace it)
_clock: Callable[[], float] = time.monotonic


class MissingImageError(ReproduceError):
    """An image of the table is not in the data directory (the message names the file)."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a table: ``DATA/set/file``; ``index`` is its position in the table."""

    set: str
    file: str
    index: int

    @property
    def name(self) -> str:
        """The image's name (file stem): its folder under ``OUT/TABLE/``."""
        return Path(self.file).stem

    @property
    def relative(self) -> str:
        """``set/file``, relative to the data directory."""
        return f"{self.set}/{self.file}"


@dataclass
class Benchmark:
    """One table of ``benchmarks.toml`` (see the comments at its top)."""

    name: str
    title: str
    task: str
    preset: str
    quick_preset: str
    psnr: str
    crop: int
    methods: list[str]
    labels: dict[str, str]
    notes: list[str]
    degradation: dict[str, Any]
    sets: dict[str, list[str]]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def images(self) -> list[ImageEntry]:
        """Every image of the table, sets in order."""
        files = [(s, f) for s, names in self.sets.items() for f in names]
        return [ImageEntry(s, f, i) for i, (s, f) in enumerate(files)]

    def label(self, method: str, denoiser: str | None = None) -> str:
        """How ``method`` is named in results.md and the grids.

        ``denoiser``: the denoiser the method ran with (``nlm``, ``bm3d-torch``, ...), which
        fills a ``{denoiser}`` in the label; unknown (None) leaves ``denoiser`` there.
        """
        name = DENOISER_LABELS.get(denoiser, denoiser) if denoiser else "denoiser"
        return self.labels.get(method, method).replace("{denoiser}", name)

    def paper_value(self, set_name: str, method: str, image: str | None = None) -> float | None:
        """The paper's PSNR (dB): the set average, or one image's when ``image`` is given."""
        if image is None:
            return self.paper.get(set_name, {}).get(method)
        return self.per_image.get(set_name, {}).get(method, {}).get(image)


@dataclass
class ReproduceEvent:
    """What :func:`reproduce_table` reports to its ``progress`` callback.

    ``kind``: ``"table"`` (a table starts), ``"start"`` / ``"done"`` (a job; ``manifest`` with
    ``done``), ``"skip"`` (already done), ``"iteration"`` (``engine`` holds the engine's
    progress), ``"missing"`` (an image is not in the data directory; ``message`` says which) or
    ``"note"``, ``"plan"`` (with a budget: one pair's estimated cost and whether it fits;
    ``message`` says both), or ``"failed"`` (a job failed — its run diverged; ``message`` says
    why; the table goes on and ``NAME_METHOD.failed.json`` records it). ``step`` /
    ``steps``: the job's number (1-based) and the jobs of the table.
    """

    kind: str
    table: str
    image: str | None = None
    method: str | None = None
    step: int = 0
    steps: int = 0
    message: str = ""
    manifest: dict[str, Any] | None = None
    engine: EngineProgress | None = None


ProgressFn = Callable[[ReproduceEvent], None]


# ------------------------------------------------------------------------------------ tables
def benchmarks_path() -> Path:
    """Where ``benchmarks.toml`` is (inside the installed package)."""
    return Path(str(resources.files("deeprestore.apps"))) / "benchmarks.toml"


def load_benchmarks(path: Path | None = None) -> dict[str, Benchmark]:
    """Parse and check ``benchmarks.toml``: table name → :class:`Benchmark`."""
    path = path or benchmarks_path()
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    tables: dict[str, Benchmark] = {}
    for name, raw in data.items():
        where = f"{path} [{name}]"
        task = raw["task"]
        allowed = (INPUT_ROW, *TASK_METHODS[task])
        methods = list(raw["methods"])
        for method in methods:
            if method not in allowed:
                raise ValueError(f"{where}: method {method!r} does not apply to {task}")
        for key in raw.get("degradation", {}):
            if key not in DEGRADATION_KEYS:
                raise ValueError(f"{where}: unknown degradation key {key!r}")
        sets = {s: list(table["images"]) for s, table in raw["sets"].items()}
        names = [Path(f).stem for files in sets.values() for f in files]
        if len(names) != len(set(names)):
            raise ValueError(f"{where}: two images share a name")
        bench = Benchmark(
            name=name, title=raw["title"], task=task, preset=raw["preset"],
            quick_preset=raw["quick_preset"], psnr=raw["psnr"], crop=int(raw["crop"]),
            methods=methods, labels=dict(raw.get("labels", {})), notes=list(raw.get("notes", [])),
            degradation=dict(raw.get("degradation", {})), sets=sets,
            paper={s: dict(t.get("paper", {})) for s, t in raw["sets"].items()},
            per_image={s: {m: dict(v) for m, v in t.get("per_image", {}).items()}
                       for s, t in raw["sets"].items()},
        )
        for set_name in sets:
            quoted = set(bench.paper[set_name]) | set(bench.per_image[set_name])
            if not quoted <= set(methods):
                raise ValueError(f"{where}: paper numbers for methods not in the table")
        tables[name] = bench
    if tuple(tables) != TABLES:
        raise ValueError(f"{path}: the tables must be {', '.join(TABLES)}")
    return tables


def _select_methods(bench: Benchmark, methods: Sequence[str] | None) -> list[str]:
    if not methods:
        return list(bench.methods)
    unknown = [m for m in methods if m not in bench.methods]
    if unknown:
        raise ReproduceError(f"method {unknown[0]!r} is not in table {bench.name} "
                             f"(its methods: {', '.join(bench.methods)})")
    return [m for m in bench.methods if m in methods]


def _matches(entry: ImageEntry, wanted: str) -> bool:
    text = wanted.strip().strip("/")
    return text in (entry.name, entry.file, entry.relative, f"{entry.set}/{entry.name}")


def _select_images(bench: Benchmark, images: Sequence[str] | None) -> list[ImageEntry]:
    entries = bench.images()
    if not images:
        return entries
    for wanted in images:
        if not any(_matches(e, wanted) for e in entries):
            known = ", ".join(e.name for e in entries)
            raise ReproduceError(f"image {wanted!r} is not in table {bench.name} "
                                 f"(its images: {known})")
    return [e for e in entries if any(_matches(e, w) for w in images)]


# ---------------------------------------------------------------------------- preparing images
def _centre_crop(pixels: np.ndarray, side: int) -> tuple[np.ndarray, list[int]]:
    """The centre ``side``×``side`` crop (smaller sides are kept whole); box [top, left, h, w]."""
    height, width = min(side, pixels.shape[0]), min(side, pixels.shape[1])
    top, left = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
    return pixels[top : top + height, left : left + width], [top, left, height, width]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _normalised(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples → lists), for comparisons with files."""
    return json.loads(json.dumps(data))


def _task_options(bench: Benchmark, record: dict[str, Any], image_dir: Path) -> TaskOptions:
    return TaskOptions(
        bench.task,
        sigma=record["sigma"],
        kernel=record.get("kernel"),
        factor=record.get("factor"),
        downsampler=record.get("downsampler"),
        mask=str(image_dir / "mask.png") if bench.task == "inpaint" else None,
    )


def _prepare_image(
    bench: Benchmark, entry: ImageEntry, data: Path, image_dir: Path, *, quick: bool, seed: int,
    force: bool,
) -> tuple[dict[str, Any], bool]:
    """Degrade one image into ``image_dir`` unless it is there already with the same record.

    Returns the degradation record and whether the inputs were (re)written — then every
    method's earlier output for this image is stale.
    """
    source = read_image(data / entry.set / entry.file)
    clean = source.pixels
    quick_crop = None
    if quick:
        clean, quick_crop = _centre_crop(clean, bench.crop)
    degradation = bench.degradation
    degraded = degrade_pixels(
        clean, bench.task, sigma=degradation.get("sigma"), kernel=degradation.get("kernel"),
        factor=degradation.get("factor"), mask=degradation.get("mask"), seed=seed + entry.index,
    )
    if bench.task == "superres":  # the reference is the HR crop that was downscaled
        top, left, height, width = degraded.params["crop"]
        clean = clean[top : top + height, left : left + width]
    record = _normalised({
        "table": bench.name, "set": entry.set, "image": entry.name, "source": entry.relative,
        "source_size": [source.height, source.width], "quick_crop": quick_crop,
        "downsampler": degradation.get("downsampler"), **degraded.params,
    })
    paths = {"clean": image_dir / "clean.png", "input": image_dir / "input.png",
             "record": image_dir / "input.json"}
    if bench.task == "inpaint":
        paths["mask"] = image_dir / "mask.png"
    previous = _read_json(paths["record"])
    if (not force and previous is not None and previous.get("degradation") == record
            and all(p.exists() for p in paths.values())):
        return record, False
    image_dir.mkdir(parents=True, exist_ok=True)
    write_image(paths["clean"], Image(clean, source.bit_depth))
    # 8-bit PNG: the jobs read files, so the paper's float inputs are quantised (results.md)
    write_image(paths["input"], Image(degraded.image, 8))
    if degraded.mask is not None:
        write_image(paths["mask"], Image(degraded.mask[:, :, None]))
    options = _task_options(bench, record, image_dir)
    problem = build_problem(options, read_image(paths["input"]), read_image(paths["clean"]))
    start, reference = problem.problem.x_init, problem.problem.reference
    if reference is None or problem.problem.psnr is None:  # pragma: no cover - always set
        raise ReproduceError(f"{entry.relative}: no reference to measure the input against")
    write_json(paths["record"], {
        "degradation": record,
        "psnr_protocol": problem.protocol,
        "psnr": float(problem.problem.psnr(start, reference)),
        "ssim": ssim(start, reference, problem.protocol),
        "deeprestore": __version__,
    })
    return record, True


# ------------------------------------------------------------------------------------- running
def _overrides(method: str, *, seed: int, runs: int | None, iterations: int | None,
               precision: str | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"seed": seed}
    if runs is not None and method in NETWORK_METHODS:
        values["runs"] = runs
    if precision is not None and method in NETWORK_METHODS:
        values["precision"] = precision
    if iterations is not None and method in ITERATIVE_METHODS:
        values["iterations"] = iterations
    return values


def reproduce_table(
    table: str,
    data: Path,
    out: Path,
    *,
    methods: list[str] | None = None,
    images: list[str] | None = None,
    quick: bool = False,
    device: torch.device | None = None,
    runs: int | None = None,
    seed: int = 0,
    force: bool = False,
    skip_missing: bool = False,
    command: str = "",
    progress: ProgressFn | None = None,
    iterations: int | None = None,
    budget_minutes: float | None = None,
    group: int = 1,
    precision: str | None = None,
) -> Path:
    """Reproduce one table of the paper (or ``"all"``) into ``out``; return its results.md.

    ``data``: the data directory (``cbm3d9/``, ``set5/``, ``set14/``, ``ncsr4/``);
    ``methods`` / ``images``: subsets (names as in ``benchmarks.toml``; images by name, file or
    ``set/name``); ``quick``: centre crops and the ``-quick`` presets; ``runs``: runs averaged
    by the network methods; ``seed``: the image at position i of the table is degraded with
    seed + i, and every method runs with ``seed``; ``force``: redo finished work;
    ``skip_missing``: skip images not in ``data`` (rows marked missing) instead of raising
    :class:`MissingImageError`; ``command``: recorded in manifests and results.md;
    ``iterations``: overrides the iterative methods' (network methods and RED) iteration counts;
    ``budget_minutes``: stop inside this much wall time: each table first prints its plan (the
    estimated cost of every pair still to do, from one step timed per method and image size),
    then runs pairs in order until the time is spent; the pair running then saves a checkpoint
    and :class:`BudgetSpent` is raised — the same call later continues where this one stopped;
    ``group``: step up to this many network problems of one size together (different images
    and methods, :func:`~deeprestore.io.jobs.run_jobs_together`), each with its own results as
    if run alone; 1 runs the pairs one by one; ``precision``: the network methods' arithmetic
    (None: the presets', float32, the paper's; ``bf16`` or ``auto`` to measure what bf16
    changes).
    """
    tables = load_benchmarks()
    device = device or torch.device("cpu")
    if not data.is_dir():
        raise ReproduceError(f"data directory {data} not found")
    deadline = None if budget_minutes is None else _clock() + 60 * budget_minutes
    kwargs: dict[str, Any] = dict(quick=quick, device=device, runs=runs, seed=seed, force=force,
                                  skip_missing=skip_missing, command=command, progress=progress,
                                  iterations=iterations, deadline=deadline,
                                  group=max(1, group), precision=precision)
    if table != ALL:
        if table not in tables:
            raise ReproduceError(f"unknown table {table!r} (known: {', '.join(TABLES)}, all)")
        bench = tables[table]
        return _run_table(bench, data, out, _select_methods(bench, methods),
                          _select_images(bench, images), **kwargs)
    for method in methods or ():
        if not any(method in b.methods for b in tables.values()):
            raise ReproduceError(f"method {method!r} is in no table")
    for wanted in images or ():
        if not any(_matches(e, wanted) for b in tables.values() for e in b.images()):
            raise ReproduceError(f"image {wanted!r} is in no table")
    written: list[Path] = []
    for bench in tables.values():
        chosen = [m for m in bench.methods if not methods or m in methods]
        entries = [e for e in bench.images() if not images or any(_matches(e, w) for w in images)]
        if not chosen or not entries:
            if progress is not None:
                progress(ReproduceEvent("note", bench.name, message="no method or image chosen"))
            continue
        written.append(_run_table(bench, data, out, chosen, entries, **kwargs))
    summary = out / "results.md"
    parts = [path.read_text(encoding="utf-8").replace("\n#", "\n##") for path in written]
    header = "# deeprestore reproduce all\n\n" + "".join(
        f"- [{p.parent.name}]({p.parent.name}/results.md)\n" for p in written)
    atomic_write_bytes(summary, "\n".join([header, *("#" + p for p in parts)]).encode("utf-8"))
    return summary


def _run_table(
    bench: Benchmark,
    data: Path,
    out: Path,
    methods: list[str],
    entries: list[ImageEntry],
    *,
    quick: bool,
    device: torch.device,
    runs: int | None,
    seed: int,
    force: bool,
    skip_missing: bool,
    command: str,
    progress: ProgressFn | None,
    iterations: int | None,
    deadline: float | None,
    group: int = 1,
    precision: str | None = None,
) -> Path:
    """Run one table: degrade, restore, grids, results. Returns OUT/TABLE/results.md.
    With a ``deadline`` (on :data:`_clock`): first the plan, then the pairs until it passes.
    With ``group`` > 1 each image's baselines run at once and its network pairs wait, to be
    stepped in groups of up to ``group`` problems of one size after every image's baselines."""
    def report(event: ReproduceEvent) -> None:
        if progress is not None:
            progress(event)

    missing = [e for e in entries if not (data / e.set / e.file).is_file()]
    if missing and not skip_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingImageError(f"{missing[0].relative} not found in {data}{more}")
    warnings = [f"{e.relative} not found in {data}: skipped" for e in missing]
    for text in warnings:
        report(ReproduceEvent("missing", bench.name, message=text))
    preset_name = bench.quick_preset if quick else bench.preset
    preset = load_preset(preset_name)
    jobs_methods = [m for m in methods if m != INPUT_ROW]
    settings = {}
    for method in jobs_methods:  # the preset's denoiser, in torch on CUDA (as the CLI's auto)
        overrides = _overrides(method, seed=seed, runs=runs, iterations=iterations,
                               precision=precision)
        resolver = SettingsResolver(bench.task, method, overrides, "auto", device)
        settings[method] = resolver.settings(preset_name)[1]
    table_dir = out / bench.name
    present = [e for e in entries if e not in missing]
    steps = len(present) * len(jobs_methods)
    report(ReproduceEvent("table", bench.name, steps=steps, message=bench.title))
    meta = {"quick": quick, "preset": preset.name, "device": device, "seed": seed,
            "command": command, "warnings": warnings,
            "denoisers": {m: s.denoiser for m, s in settings.items()}}
    def make_job(image_dir: Path, method: str, options: TaskOptions) -> Job:
        return Job(input=image_dir / "input.png", output_dir=image_dir, method=method,
                   settings=settings[method], task=options, preset=preset.name,
                   reference=image_dir / "clean.png", device=device, overwrite=True,
                   command=command, auto_tile=False,  # tiles are not the protocol
                   deadline=deadline, clock=_clock)

    def finished(done: dict[str, Any] | None, job: Job, fresh: bool) -> bool:
        """Whether ``done`` (the pair's manifest, if any) is this pair's result, still valid."""
        return (done is not None and not force and not fresh
                and done.get("parameters") == _normalised(job.settings.to_dict()))

    prepared: dict[str, tuple[dict[str, Any], bool]] = {}
    if deadline is not None:  # the plan: what is left, what it costs, what fits
        now = _clock()
        planned, left = 0.0, deadline - now
        # estimating costs a timed step per method and size (seconds each on a GPU, where
        # cuDNN autotunes every new shape): the plan stops measuring at half the budget, and
        # once what it planned no longer fits
        plan_until = now + left / 2

        def may_measure() -> bool:
            return planned <= left and _clock() < plan_until
        timings: dict[tuple[str, tuple[int, int]], tuple[float, float]] = {}
        for entry in present:
            image_dir = table_dir / entry.name
            prepared[entry.name] = _prepare_image(bench, entry, data, image_dir, quick=quick,
                                                  seed=seed, force=force)
            record, fresh = prepared[entry.name]
            options = _task_options(bench, record, image_dir)
            for method in jobs_methods:
                job = make_job(image_dir, method, options)
                if finished(_read_json(job.outputs()["json"]), job, fresh):
                    continue
                try:
                    seconds = _pair_seconds(job, fresh or force, timings, may_measure)
                except CostError as err:  # it fails when its turn comes; the plan goes on
                    report(ReproduceEvent("plan", bench.name, entry.name, method,
                                          message=f"cannot run: {err}"))
                    continue
                if seconds is None:
                    why = ("the pairs before it already fill the budget" if planned > left
                           else "the plan stopped measuring at half the budget")
                    report(ReproduceEvent("plan", bench.name, entry.name, method,
                                          message=f"not estimated ({why}): a later job"))
                    continue
                planned += seconds
                fits = "this job" if planned <= left else "does not fit: checkpointed or next job"
                report(ReproduceEvent("plan", bench.name, entry.name, method, message=(
                    f"about {format_duration(seconds)}, {format_duration(planned)} so far of "
                    f"{format_duration(max(left, 0.0))} left: {fits}")))
    def budget_check(entry: ImageEntry, method: str) -> None:
        if deadline is not None and _clock() >= deadline:
            raise BudgetSpent(f"the budget is spent before {bench.name}/{entry.name} "
                              f"{method}: rerun the same command to continue")

    def outcome(entry: ImageEntry, method: str, job: Job, where: dict[str, Any],
                result: dict[str, Any] | BaseException) -> None:
        """Report one pair's manifest, or record its failure; raise what ends the table."""
        if isinstance(result, Interrupted):
            result.hint = "rerun the same command to continue"
            raise result
        if isinstance(result, OutOfTime):
            saved = "" if result.checkpoint is None else f", its state saved in {result.checkpoint}"
            raise BudgetSpent(f"the budget is spent during {bench.name}/{entry.name} "
                              f"{method}{saved}: rerun the same command to continue") from None
        if isinstance(result, (FloatingPointError, JobError, CostError)):
            # this pair fails (or does not fit), the table goes on
            record_failure(job.output_dir, job.input, method, str(result))
            report(ReproduceEvent("failed", **where, message=str(result)))
            return
        if isinstance(result, BaseException):
            raise result
        report(ReproduceEvent("done", **where, manifest=result))

    def forwarder(where: dict[str, Any]) -> Callable[[EngineProgress], None] | None:
        if progress is None:
            return None
        return lambda event: report(ReproduceEvent("iteration", **where, engine=event))

    waiting: list[tuple[ImageEntry, str, Job, dict[str, Any]]] = []
    step = 0
    try:
        for entry in present:
            image_dir = table_dir / entry.name
            record, fresh = prepared.get(entry.name) or _prepare_image(
                bench, entry, data, image_dir, quick=quick, seed=seed, force=force)
            options = _task_options(bench, record, image_dir)
            for method in jobs_methods:
                step += 1
                job = make_job(image_dir, method, options)
                where = dict(table=bench.name, image=entry.name, method=method, step=step,
                             steps=steps)
                done = _read_json(job.outputs()["json"])
                if finished(done, job, fresh):
                    report(ReproduceEvent("skip", **where, manifest=done))
                    continue
                if done is not None and not force and not fresh:
                    report(ReproduceEvent("note", **where, message="settings changed: redone"))
                job = _resumed_if_possible(job, force or fresh, report, where)
                if group > 1 and method in NETWORK_METHODS:
                    waiting.append((entry, method, job, where))
                    continue
                budget_check(entry, method)
                report(ReproduceEvent("start", **where))
                try:
                    result: dict[str, Any] | BaseException = run_job(
                        job, callback=forwarder(where))
                except (Interrupted, OutOfTime, FloatingPointError, JobError,
                        CostError) as err:
                    result = err
                outcome(entry, method, job, where, result)
            _write_grid(bench, image_dir, methods)
            _write_results(bench, table_dir, methods, entries, missing, meta)
        for batch in _groups(waiting, group):
            budget_check(batch[0][0], batch[0][1])
            for _, _, _, where in batch:
                report(ReproduceEvent("start", **where, message=f"grouped: {len(batch)} "
                                      "problems per step"))
            def group_notice(text: str, where: dict[str, Any] = batch[0][3]) -> None:
                report(ReproduceEvent("note", **where, message=text))

            results = run_jobs_together([job for _, _, job, _ in batch],
                                        [forwarder(where) for _, _, _, where in batch],
                                        notice=group_notice)
            stopping: BaseException | None = None
            for (entry, method, job, where), result in zip(batch, results, strict=True):
                try:
                    outcome(entry, method, job, where, result)
                except BaseException as stop:  # report every pair before stopping
                    stopping = stopping or stop
            for entry in dict.fromkeys(entry for entry, _, _, _ in batch):
                _write_grid(bench, table_dir / entry.name, methods)
            _write_results(bench, table_dir, methods, entries, missing, meta)
            if stopping is not None:
                raise stopping
    except BaseException:
        with contextlib.suppress(Exception):
            _write_results(bench, table_dir, methods, entries, missing, meta)
        raise
    return _write_results(bench, table_dir, methods, entries, missing, meta)


def _groups(waiting: list[tuple[ImageEntry, str, Job, dict[str, Any]]], size: int
            ) -> list[list[tuple[ImageEntry, str, Job, dict[str, Any]]]]:
    """The waiting network pairs in groups of up to ``size`` whose networks share a shape: the
    same input size and the same network settings (in table order within each group)."""
    by_key: dict[tuple[Any, ...], list[tuple[ImageEntry, str, Job, dict[str, Any]]]] = {}
    for item in waiting:
        job = item[2]
        observed = read_image(job.input)
        s = job.settings
        key = (observed.height, observed.width, observed.channels, s.input_channels,
               s.net_channels, s.skip_channels, s.upsample, s.precision, s.compile)
        by_key.setdefault(key, []).append(item)
    return [items[start:start + size] for items in by_key.values()
            for start in range(0, len(items), size)]


def _pair_seconds(job: Job, start_over: bool,
                  timings: dict[tuple[str, tuple[int, int]], tuple[float, float]],
                  may_measure: Callable[[], bool] = lambda: True) -> float | None:
    """Estimated seconds of ``job``'s remaining iterations (0 for methods without a network):
    one step and one denoiser call timed per (method, image size), cached in ``timings``;
    None when that needs a measurement and ``may_measure()`` says no."""
    settings = job.settings
    if settings.method not in NETWORK_METHODS:
        return 0.0
    remaining = settings.iterations
    if not start_over and job.checkpoint_path().exists():
        with contextlib.suppress(JobError):
            remaining -= int(load_checkpoint(job)["algorithm"]["iteration"])
    observed = read_image(job.input)
    key = (settings.method, (observed.height, observed.width))
    if key not in timings:
        if not may_measure():
            return None
        problem = build_problem(job.task, observed, None).problem
        estimate = estimate_cost(problem_to_device(problem, job.device), settings, job.device)
        assert estimate is not None  # a network method
        timings[key] = (estimate.seconds_per_iteration, estimate.denoiser_seconds)
    step, call = timings[key]
    calls = math.ceil(remaining / settings.denoise_every) if call else 0
    return remaining * step + calls * call


def _resumed_if_possible(job: Job, start_over: bool, report: Callable[[ReproduceEvent], None],
                         where: dict[str, Any]) -> Job:
    """``job`` resuming the checkpoint an interrupted run of the same pair left, when there is
    one made with the same settings (and neither ``--force`` nor a new input asks to start
    over); otherwise ``job`` itself, from iteration 0."""
    if start_over or not job.checkpoint_path().exists():
        return job
    try:
        load_checkpoint(job)
    except JobError as err:
        report(ReproduceEvent("note", **where, message=f"{err}: started over"))
        return job
    report(ReproduceEvent("note", **where, message="resumed from its checkpoint"))
    return replace(job, resume=True)


# ----------------------------------------------------------------------------- results, grids
def _method_manifest(image_dir: Path, method: str) -> dict[str, Any] | None:
    return _read_json(image_dir / f"input_{method}.json")


def _write_grid(bench: Benchmark, image_dir: Path, methods: list[str]) -> Path | None:
    """``grid.png``: the input, every finished method's output and the reference."""
    record = _read_json(image_dir / "input.json")
    if record is None:
        return None
    degraded = read_image(image_dir / "input.png").pixels
    clean = read_image(image_dir / "clean.png").pixels
    if bench.task == "superres":
        factor = int(record["degradation"]["factor"])
        title = f"low-res input (x{factor})"
        degraded = degraded.repeat(factor, axis=0).repeat(factor, axis=1)
    else:
        title = f"{bench.label(INPUT_ROW)}\n{record['psnr']:.2f} dB"
    panels: list[tuple[str, np.ndarray]] = [(title, degraded)]
    for method in methods:
        manifest = _method_manifest(image_dir, method)
        output = image_dir / f"input_{method}.png"
        if method == INPUT_ROW or manifest is None or not output.exists():
            continue
        psnr = manifest.get("psnr")
        value = "" if psnr is None else f"\n{psnr:.2f} dB"
        denoiser = manifest.get("parameters", {}).get("denoiser")
        panels.append((f"{bench.label(method, denoiser)}{value}", read_image(output).pixels))
    panels.append(("reference", clean))
    return compare_image(panels, image_dir / "grid.png")


def _rows(bench: Benchmark, table_dir: Path, methods: list[str], entries: list[ImageEntry],
          missing: list[ImageEntry]) -> list[dict[str, Any]]:
    """One row per (image, method), read from the files on disk."""
    rows = []
    for entry in entries:
        image_dir = table_dir / entry.name
        record = _read_json(image_dir / "input.json")
        for method in methods:
            row: dict[str, Any] = {key: None for key in CSV_FIELDS}
            row.update(image=entry.name, method=method, set=entry.set,
                       paper_psnr=bench.paper_value(entry.set, method, entry.name))
            if entry in missing:
                row["status"] = "missing"
            elif method == INPUT_ROW:
                row["status"] = "not run" if record is None else "ok"
                if record is not None:
                    row.update(psnr=record.get("psnr"), ssim=record.get("ssim"))
            else:
                manifest = _method_manifest(image_dir, method)
                row["status"] = "not run" if manifest is None else "ok"
                if manifest is not None:
                    row.update({k: manifest.get(k) for k in
                                ("psnr", "ssim", "seconds", "iterations", "device")})
            rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        cells = []
        for key in CSV_FIELDS:
            value = row[key]
            if value is None:
                cells.append("")
            elif key in ("psnr", "ssim"):
                cells.append(f"{value:.4f}")
            else:
                cells.append(str(value))
        writer.writerow(cells)
    return buffer.getvalue()


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _difference(ours: float | None, paper: float | None) -> str:
    return "–" if ours is None or paper is None else f"{ours - paper:+.2f}"


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``rows``; None when a row lacks it or there is no row."""
    if not rows or any(r[key] is None for r in rows):
        return None
    return float(np.mean([r[key] for r in rows]))


def _device_text(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, "\
           f"torch threads: {torch.get_num_threads()})"


def _markdown(bench: Benchmark, rows: list[dict[str, Any]], methods: list[str],
              entries: list[ImageEntry], meta: dict[str, Any]) -> str:
    preset = meta["preset"]

    def label(method: str) -> str:
        return bench.label(method, meta.get("denoisers", {}).get(method))

    lines = [f"# {bench.name}: {bench.title}", ""]
    if meta["quick"]:
        side = bench.crop
        lines += [
            f"**Quick run: these numbers are NOT comparable to the paper.** They come from "
            f"centre crops of at most {side}×{side} px restored with the short `{preset}` preset "
            f"(the paper restores whole images with `{bench.preset}`). They show that the "
            "pipeline works, not how well the methods do.", ""]
    devices = sorted({str(r["device"]) for r in rows if r["device"]})
    degradation = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in bench.degradation.items())
    stored = ("the 8-bit low-resolution image (PIL's Lanczos downscale quantises to 8 bits, as "
              "the DIP code does)" if bench.task == "superres" else
              "an 8-bit PNG: the paper kept the degraded input in float, the restorations here "
              "read the quantised file (about 0.01 dB at sigma = 25)")
    lines += [
        "| | |", "|---|---|",
        f"| command | `{meta['command'] or '(API call)'}` |",
        f"| date | {datetime.now(timezone.utc).isoformat(timespec='seconds')} |",
        f"| device | {_device_text(meta['device'])}; in the manifests: "
        f"{', '.join(devices) or '–'} |",
        f"| versions | deeprestore {__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()} |",
        f"| preset | `{preset}` |",
        f"| PSNR | {_PROTOCOL_TEXT[bench.psnr]} |",
        f"| degradation | {bench.task}: {degradation}; the image at position i of the table is "
        f"degraded with seed {meta['seed']} + i, methods run with seed {meta['seed']} |",
        f"| input | {stored} |",
        "",
    ]
    by_key = {(r["image"], r["method"]): r for r in rows}
    for set_name in bench.sets:
        in_set = [e for e in entries if e.set == set_name]
        if not in_set:
            continue
        total = len(bench.sets[set_name])
        lines += [f"## {set_name}: average PSNR (dB)", "",
                  "| method | ours | paper | ours − paper | SSIM | s / image | iterations "
                  "| images |", "|---|---|---|---|---|---|---|---|"]
        partial = False
        for method in methods:
            done = [by_key[(e.name, method)] for e in in_set
                    if by_key[(e.name, method)]["psnr"] is not None]
            psnr = _mean(done, "psnr")
            paper = bench.paper_value(set_name, method)
            difference = _difference(psnr, paper)
            if done and len(done) < total and difference != "–":
                difference += " *"
                partial = True
            iters = sorted({r["iterations"] for r in done if r["iterations"] is not None})
            lines.append(
                f"| {label(method)} | {_number(psnr)} | {_number(paper)} "
                f"| {difference} | {_number(_mean(done, 'ssim'), 3)} "
                f"| {_number(_mean(done, 'seconds'), 1)} "
                f"| {', '.join(map(str, iters)) or '–'} | {len(done)}/{total} |")
        if partial:
            lines += ["", "\\* averaged over fewer images than the paper's set: not the paper's "
                      "average."]
        lines.append("")
    lines += ["## Per image: PSNR (dB)", "",
              "| image | " + " | ".join(label(m) for m in methods) + " |",
              "|---|" + "---|" * len(methods)]
    for entry in entries:
        cells = []
        for method in methods:
            row = by_key[(entry.name, method)]
            if row["status"] == "missing":
                cells.append("missing")
                continue
            text = _number(row["psnr"])
            if row["paper_psnr"] is not None:
                text += (f" (paper {row['paper_psnr']:.2f}, "
                         f"{_difference(row['psnr'], row['paper_psnr'])})")
            cells.append(text)
        lines.append(f"| {entry.relative} | " + " | ".join(cells) + " |")
    lines += ["", "`–`: not run yet (rerun the same command to continue) or no paper number.", ""]
    lines += ["## Notes", ""] + [f"- {note}" for note in bench.notes]
    lines += ["- Pictures: `IMAGE/grid.png` (input, every output, reference); logs and manifests: "
              "`IMAGE/input_METHOD.csv`, `.json`.", ""]
    if meta["warnings"]:
        lines += ["## Warnings", ""] + [f"- {text}" for text in meta["warnings"]] + [""]
    return "\n".join(lines)


def _write_results(bench: Benchmark, table_dir: Path, methods: list[str],
                   entries: list[ImageEntry], missing: list[ImageEntry],
                   meta: dict[str, Any]) -> Path:
    """Write ``results.csv`` and ``results.md`` from the files on disk; return results.md."""
    rows = _rows(bench, table_dir, methods, entries, missing)
    atomic_write_bytes(table_dir / "results.csv", _csv_text(rows).encode("utf-8"))
    path = table_dir / "results.md"
    atomic_write_bytes(path, _markdown(bench, rows, methods, entries, meta).encode("utf-8"))
    return path
