"""One restoration job: read an input, build the task's problem, run the engine, write outputs.

This is the glue between the command line and the engine; it owns file names and the manifest.
Outputs for ``photo.png`` restored with ``deepred`` into ``OUT/``:

- ``OUT/photo_deepred.png``: the restored image (same channels and bit depth as the input);
- ``OUT/photo_deepred.csv``: the log (see :data:`deeprestore.io.writers.CSV_COLUMNS`);
- ``OUT/photo_deepred.json``: the manifest (inputs, every effective parameter, versions, PSNR).

An image that fails leaves none of those, only ``OUT/photo_deepred.failed.json`` (input, method,
error), which ``deeprestore summary`` reports and a later successful run removes.
"""

from __future__ import annotations

import io
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from deeprestore import __version__
from deeprestore.config.settings import Settings
from deeprestore.io.images import MIN_SIDE, Image, ImageError, read_image, to_array
from deeprestore.io.inputs import DEFAULT_MAX_PIXELS
from deeprestore.io.writers import atomic_write_bytes, write_csv, write_image, write_json
from deeprestore.metrics import ssim
from deeprestore.solvers.base import LogRow, Progress, ProgressCallback, Result, problem_to_device
from deeprestore.solvers.control import Interrupted, OutOfTime, ResumeError, RunControl
from deeprestore.solvers.cost import (
    CostError,
    CostEstimate,
    available_memory,
    denoiser_seconds,
    estimate_cost,
    format_bytes,
    format_duration,
    release_device_memory,
)
from deeprestore.solvers.precision import AUTO, PrecisionChoice
from deeprestore.solvers.runner import restore, restore_together
from deeprestore.tasks import TaskOptions, TaskProblem, build_problem, tile_problem
from deeprestore.tiles import Blender, default_overlap, plan_tiles

#: the command line's default --max-minutes: a run expected to take longer is refused with
#: what would fit instead
DAY_MINUTES = 24 * 60.0


class JobError(ValueError):
    """A job that cannot run (bad output path, existing outputs, …); one-line message."""


@dataclass
class Job:
    """Everything needed to restore one input file."""

    input: Path
    output_dir: Path
    method: str
    settings: Settings
    task: TaskOptions
    preset: str
    reference: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    overwrite: bool = False
    command: str = ""
    compare: bool = True
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    checkpoint_every: int | None = None
    resume: bool = False
    #: refuse, before anything is written, a run predicted to need more than this many bytes
    #: (the device's available memory always bounds it) or to take longer than this (minutes)
    max_memory: int | None = None
    max_minutes: float | None = None
    #: restore in overlapping tiles of about this many input pixels a side, plus the overlap
    #: (None: whole, unless ``auto_tile`` and the whole image is predicted not to fit in memory)
    tile: int | None = None
    auto_tile: bool = True
    #: a time on ``clock`` after which the run checkpoints and raises
    #: :class:`~deeprestore.solvers.control.OutOfTime` (a budgeted ``reproduce``)
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic

    def outputs(self) -> dict[str, Path]:
        """The output files: ``image``, ``csv`` and ``json``."""
        stem = f"{self.input.stem}_{self.method}"
        return {  # always PNG: lossless, and it keeps 8/16-bit, grey/RGB and alpha
            "image": self.output_dir / f"{stem}.png",
            "csv": self.output_dir / f"{stem}.csv",
            "json": self.output_dir / f"{stem}.json",
        }

    def compare_path(self) -> Path:
        """The side-by-side picture ``NAME_METHOD_compare.png`` (input | restored | reference)."""
        return self.output_dir / f"{self.input.stem}_{self.method}_compare.png"

    def checkpoint_path(self) -> Path:
        """Where an interrupted run's state goes, ``NAME_METHOD.ckpt`` (removed when done)."""
        return self.output_dir / f"{self.input.stem}_{self.method}.ckpt"

    def failure_path(self) -> Path:
        """The record left by a failed run, ``NAME_METHOD.failed.json``."""
        return failure_path(self.output_dir, self.input, self.method)


def failure_path(output_dir: Path, source: Path, method: str) -> Path:
    """Where the failure record of restoring ``source`` with ``method`` goes."""
    return output_dir / f"{source.stem}_{method}.failed.json"


def record_failure(output_dir: Path, source: Path, method: str, message: str) -> Path | None:
    """Leave ``NAME_METHOD.failed.json`` (input, method, error) for ``deeprestore summary``.

    Best effort: returns None when it cannot be written (unwritable folder, full disk); the
    error line on stderr is the record then.
    """
    path = failure_path(output_dir, source, method)
    record = {"input": str(source), "method": method, "status": "failed", "error": message,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        write_json(path, record)
    except OSError:
        return None
    return path


def check_outputs(job: Job) -> list[Path]:
    """Refuse outputs that would overwrite the input; return outputs that already exist."""
    source = job.input.resolve()
    for path in job.outputs().values():
        if path.resolve() == source:
            raise JobError(f"{job.input}: the output {path} would overwrite the input")
    return [p for p in job.outputs().values() if p.exists()]


CHECKPOINT_FORMAT = 1


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("iterations", "log_every")}


def save_checkpoint(job: Job, state: dict[str, Any]) -> None:
    """Write the runner's ``state`` for ``job`` to :meth:`Job.checkpoint_path`, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "input": str(job.input), "method": job.method,
                "settings": job.settings.to_dict(), "runner": state}, buffer)
    atomic_write_bytes(job.checkpoint_path(), buffer.getvalue())


def load_checkpoint(job: Job) -> dict[str, Any]:
    """The runner state saved for ``job``; :class:`JobError` if it is unreadable or was made
    with other settings (only ``iterations`` and ``log_every`` may change; ``precision =
    "auto"`` matches the precision it chose then, which the state's ``precision`` says)."""
    path = job.checkpoint_path()
    try:
        saved = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise JobError(f"{path}: cannot read the checkpoint ({type(err).__name__}); delete it "
                       "to start over") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise JobError(f"{path}: not a deeprestore checkpoint")
    mine, theirs = _comparable(job.settings.to_dict()), _comparable(saved.get("settings", {}))
    if mine.get("precision") == "auto" and "precision" in theirs:
        mine["precision"] = theirs["precision"]  # continue in the arithmetic it started in
    if mine != theirs:
        keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise JobError(f"{path}: made with other settings ({', '.join(keys)}); delete it or "
                       "run without --resume")
    return {**saved["runner"], "precision": theirs.get("precision", "float32")}


@dataclass
class _Prepared:
    """A job read and checked, ready to run: its input, problem, saved state and tiling;
    ``job``: the job with ``precision = "auto"`` resolved (by the cost estimate, or as the
    checkpoint it continues from; a tiled job's is resolved on its first tile)."""

    started: datetime
    observed: Image
    reference: Image | None
    task_problem: TaskProblem
    resume: dict[str, Any] | None
    factor: int
    tile: int | None
    cost: CostEstimate | None = None  # the whole image's, when it runs whole
    probes: tuple[int, int] | None = None  # the memory model's, for the tiles' estimate
    job: Job | None = None
    precision: dict[str, Any] | None = None  # how ``auto`` was resolved, for the manifest


def _prepare(job: Job, notice: Callable[[str], None] | None) -> _Prepared:
    """Read ``job``'s input, build its problem, load its checkpoint, print σ and the cost;
    decide whether it runs in tiles. Raises what makes the job impossible (nothing written)."""
    started = datetime.now(timezone.utc)
    observed = read_image(job.input)
    pixels_in = observed.height * observed.width
    if min(observed.height, observed.width) < MIN_SIDE:
        raise ImageError(f"{job.input}: {observed.width}×{observed.height} is too small (each side "
                         f"needs at least {MIN_SIDE} pixels)")
    if job.max_pixels is not None and pixels_in > job.max_pixels:
        raise ImageError(
            f"{job.input}: {observed.width}×{observed.height} is larger than the limit of "
            f"{job.max_pixels} pixels (raise it with --max-pixels, e.g. --max-pixels 8192x8192)"
        )
    reference = read_image(job.reference) if job.reference is not None else None
    task_problem = build_problem(job.task, observed, reference)
    if notice is not None and task_problem.info.get("from", {}).get("sigma") == "estimated":
        left = ", the noise left after JPEG compression" if task_problem.info.get(
            "compressed") else ""
        notice(f"{job.input}: noise σ estimated {task_problem.info['sigma']:.1f} "
               f"(0–255 scale{left}; set it with --sigma)")
    checkpoint = job.checkpoint_path()
    resume = load_checkpoint(job) if job.resume and checkpoint.exists() else None
    precision = None
    if resume is not None and job.settings.precision == AUTO:
        job = _with_precision(job, resume["precision"])
        precision = PrecisionChoice(resume["precision"], AUTO,
                                    reason="as the checkpoint it continued").record()
    done = 0 if resume is None else int(resume["algorithm"]["iteration"])
    factor = int(task_problem.info.get("factor") or 1) if job.task.task == "superres" else 1
    tile = job.tile
    ceiling = job.settings.stop == "auto"
    cost = probes = None
    release_device_memory(job.device)  # what earlier jobs cached counts as free
    if tile is None or tile >= max(observed.height, observed.width):
        tile = None
        try:
            cost = estimate_cost(problem_to_device(task_problem.problem, job.device),
                                 job.settings, job.device,
                                 iterations=max(job.settings.iterations - done, 0),
                                 max_bytes=job.max_memory, max_minutes=job.max_minutes)
        except CostError as err:
            if err.estimate is not None:
                advice = what_fits(job, task_problem, err.estimate.seconds)
                raise CostError(f"{job.input}: {job.method} {err}. {advice}") from None
            if not (job.auto_tile and err.fits_side is not None and resume is None
                    and err.fits_side // factor >= MIN_SIDE):
                raise CostError(f"{job.input}: {job.method} {err}", err.fits_side) from None
            probes = None if err.model is None else err.model.probes
            tile = err.fits_side // factor
            tile -= default_overlap(tile)  # the boxes are the tile plus the overlap
            if notice is not None:
                notice(f"{job.input}: too large to restore whole ({err}); restoring it in tiles")
        else:
            if notice is not None and cost is not None:
                notice(f"{job.input}: {job.method} {cost.describe(ceiling)}")
            if cost is not None and cost.precision is not None:
                job = _with_precision(job, cost.precision.precision)
                precision = cost.precision.record()
    if tile is not None and (resume is not None or job.checkpoint_every):
        raise JobError(f"{job.input}: a tiled run cannot be checkpointed or resumed (yet); "
                       "drop --checkpoint-every/--resume")
    return _Prepared(started, observed, reference, task_problem, resume, factor, tile, cost,
                     probes, job, precision)


def _with_precision(job: Job, precision: str) -> Job:
    """``job`` with its settings' ``auto`` precision resolved to ``precision``."""
    return replace(job, settings=replace(job.settings, precision=precision))


#: the smallest crop :func:`what_fits` suggests (px a side)
SMALLEST_CROP = 128


def what_fits(job: Job, task_problem: TaskProblem, seconds: float) -> str:
    """One sentence: what would fit ``job.max_minutes`` (default a day) instead of a network
    run measured at ``seconds`` — for denoising the one-shot NLM (timed on a crop, scaled) and
    BM3D (not timed: the `bm3d` package takes seconds even on a small crop), a GPU, fewer
    iterations, a crop — with the expected times, those within the limit marked."""
    limit = 60 * (job.max_minutes if job.max_minutes is not None else DAY_MINUTES)
    problem = task_problem.problem
    options: list[str] = []

    def add(text: str, took: float | None, note: str = "") -> None:
        words = [note] if note else []
        if took is not None:
            words.append(f"about {format_duration(took)}" + (", fits" if took <= limit else ""))
        options.append(f"{text} ({', '.join(words)})" if words else text)

    if job.task.task == "denoise":
        add("--method nlm", denoiser_seconds("nlm", problem.x_init, problem.sigma, job.device),
            "one pass")
        add("--method bm3d", None, "one pass, slower than nlm")
    if job.device.type == "cpu":
        add("a GPU", None, "--device cuda")
    share = limit / seconds if seconds > 0 else 1.0
    iterations = int(job.settings.iterations * share)
    if share < 1 and iterations >= min(100, job.settings.iterations):
        add(f"--iters {iterations}", limit)
    height, width = problem.size
    crop_h, crop_w = int(height * math.sqrt(share)), int(width * math.sqrt(share))
    if share < 1 and min(crop_h, crop_w) >= SMALLEST_CROP:
        add(f"a crop of about {crop_w}×{crop_h} px", limit)
    return "Instead: " + ", ".join(options)


def _control(job: Job, prepared: _Prepared) -> RunControl:
    return RunControl(checkpoint=lambda state: save_checkpoint(job, state),
                      checkpoint_every=job.checkpoint_every, resume=prepared.resume,
                      deadline=job.deadline, clock=job.clock)


def _run_failure(job: Job, prepared: _Prepared, error: BaseException,
                 grouped_with: int | None = None) -> BaseException:
    """The error a whole-image run's ``error`` becomes for the caller (checkpoint path on a
    stop; one line naming what would fit for memory: a tile, or the job alone instead of in a
    group of ``grouped_with``; a saved state that cannot be continued)."""
    if isinstance(error, (Interrupted, OutOfTime)):
        checkpoint = job.checkpoint_path()
        error.checkpoint = checkpoint if checkpoint.exists() else None
        return error
    if isinstance(error, torch.OutOfMemoryError):
        if grouped_with is not None and grouped_with > 1:
            return JobError(f"{job.input}: {job.method} ran out of memory on {job.device} in a "
                            f"group of {grouped_with}: run it alone (--group 1)")
        side = max(prepared.observed.height, prepared.observed.width) // 2 // 32 * 32
        return JobError(f"{job.input}: {job.method} ran out of memory on {job.device}: "
                        f"try --tile {max(side, MIN_SIDE)}")
    if isinstance(error, ResumeError):
        return JobError(f"{job.checkpoint_path()}: {error}; delete it or run without --resume")
    return error


def run_job(job: Job, callback: ProgressCallback | None = None,
            notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Restore ``job.input``; write image, CSV and manifest; return the manifest.

    ``notice`` gets one-line messages before the run starts (the estimated σ; the expected
    time and peak memory, :func:`deeprestore.solvers.cost.estimate_cost`, which also refuses a run
    that
    would not fit with :class:`~deeprestore.solvers.cost.CostError`).

    Ctrl-C / SIGTERM save a checkpoint (network methods) and raise
    :class:`~deeprestore.solvers.control.Interrupted` with its path; ``job.resume`` continues from
    it.
    """
    prepared = _prepare(job, notice)
    assert prepared.job is not None
    job = prepared.job
    tiling: dict[str, Any] | None = None
    row_tiles: list[int] | None = None
    tic = time.perf_counter()
    if prepared.tile is not None:
        result, tiling, job = _restore_in_tiles(job, prepared, callback, notice)
        row_tiles = tiling.pop("row_tiles")
    else:
        try:
            result = restore(prepared.task_problem.problem, job.settings, device=job.device,
                             callback=callback, baselines=prepared.task_problem.baselines,
                             denoiser=prepared.task_problem.denoiser_for(job.settings),
                             control=_control(job, prepared))
        except (Interrupted, OutOfTime, torch.OutOfMemoryError, ResumeError) as error:
            failure = _run_failure(job, prepared, error)
        else:
            return _finish(job, prepared, result, time.perf_counter() - tic, tiling, row_tiles)
        release_device_memory(job.device)  # the failed run's tensors are unreachable by now
        raise failure
    return _finish(job, prepared, result, time.perf_counter() - tic, tiling, row_tiles)


def run_jobs_together(jobs: list[Job], callbacks: list[ProgressCallback | None] | None = None,
                      notice: Callable[[str], None] | None = None
                      ) -> list[dict[str, Any] | BaseException]:
    """Restore several jobs of network methods whose problems have one network shape (the same
    size, :func:`~deeprestore.solvers.grouping.group_key`), their Θ-steps grouped into one network
    (:func:`~deeprestore.solvers.runner.restore_together`); each job writes its own outputs as
    :func:`run_job` would (its manifest says ``grouped_with``: how many problems stepped
    together; ``seconds``: the group's wall time). Returns each job's manifest, or the
    exception that ended it (a job that cannot be prepared, or wants tiles, fails alone
    without stopping the others; tiled jobs are refused here).
    """
    callbacks = list(callbacks) if callbacks is not None else [None] * len(jobs)
    outcomes: list[dict[str, Any] | BaseException | None] = [None] * len(jobs)
    ready: list[tuple[int, _Prepared]] = []
    jobs = list(jobs)
    auto = any(job.settings.precision == AUTO for job in jobs)
    for index, job in enumerate(jobs):
        try:
            prepared = _prepare(job, notice)
            if prepared.tile is not None:
                raise JobError(f"{job.input}: {job.method} needs tiles, which are not grouped")
        except Exception as error:  # this job fails; the others go on
            outcomes[index] = error
            continue
        assert prepared.job is not None
        jobs[index] = prepared.job
        ready.append((index, prepared))
    if ready and auto:  # one network shape, one arithmetic: the first's, and its record
        first, record = jobs[ready[0][0]].settings.precision, ready[0][1].precision
        for index, prepared in ready:
            jobs[index] = _with_precision(jobs[index], first)
            prepared.precision = record
    for chunk in _fitting_chunks(ready, jobs[0].device if jobs else torch.device("cpu"),
                                 notice):
        _run_chunk(jobs, chunk, callbacks, outcomes, notice)
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _fitting_chunks(ready: list[tuple[int, _Prepared]], device: torch.device,
                    notice: Callable[[str], None] | None) -> list[list[tuple[int, _Prepared]]]:
    """``ready`` in consecutive groups whose predicted peaks (each job's own estimate) add up
    to no more than the device's available memory — all of them in one group when they fit."""
    available = available_memory(device)
    peaks = [prepared.cost.peak_bytes if prepared.cost is not None else 0
             for _, prepared in ready]
    if available is None or sum(peaks) <= available:
        return [ready] if ready else []
    chunks: list[list[tuple[int, _Prepared]]] = [[]]
    total = 0
    for item, peak in zip(ready, peaks, strict=True):
        if chunks[-1] and total + peak > available:
            chunks.append([])
            total = 0
        chunks[-1].append(item)
        total += peak
    if notice is not None:
        notice(f"{len(ready)} problems need about {format_bytes(sum(peaks))} together, "
               f"{format_bytes(available)} available on {device}: stepping them in "
               f"{len(chunks)} groups of at most {max(len(c) for c in chunks)}")
    return chunks


def _run_chunk(jobs: list[Job], chunk: list[tuple[int, _Prepared]],
               callbacks: list[ProgressCallback | None],
               outcomes: list[dict[str, Any] | BaseException | None],
               notice: Callable[[str], None] | None) -> None:
    """Restore one group of prepared jobs together; write each one's outputs or its error
    into ``outcomes``."""
    tic = time.perf_counter()
    results = restore_together(
        [prepared.task_problem.problem for _, prepared in chunk],
        [jobs[index].settings for index, _ in chunk], device=jobs[chunk[0][0]].device,
        callbacks=[callbacks[index] for index, _ in chunk],
        controls=[_control(jobs[index], prepared) for index, prepared in chunk],
        denoisers=[prepared.task_problem.denoiser_for(jobs[index].settings)
                   for index, prepared in chunk],
        notice=notice,
    )
    wall = time.perf_counter() - tic
    for (index, prepared), result in zip(chunk, results, strict=True):
        job = jobs[index]
        if isinstance(result, BaseException):
            outcomes[index] = _run_failure(job, prepared, result, grouped_with=len(chunk))
            continue
        try:
            outcomes[index] = _finish(job, prepared, result, wall, None, None,
                                      grouped_with=len(chunk))
        except Exception as error:
            outcomes[index] = error
    del results
    release_device_memory(jobs[chunk[0][0]].device)


def _finish(job: Job, prepared: _Prepared, result: Result, wall: float,
            tiling: dict[str, Any] | None, row_tiles: list[int] | None,
            grouped_with: int | None = None) -> dict[str, Any]:
    """Write ``result``'s image, CSV, comparison and manifest, all or nothing; return the
    manifest."""
    observed, reference, task_problem = (prepared.observed, prepared.reference,
                                         prepared.task_problem)
    resume = prepared.resume
    pixels = to_array(result.image)
    same_size = pixels.shape[:2] == observed.pixels.shape[:2]
    restored = Image(pixels, observed.bit_depth, observed.alpha if same_size else None)
    outputs = job.outputs()
    psnr = psnr_input = ssim_value = None
    problem = task_problem.problem
    if problem.reference is not None and problem.psnr is not None:
        ref = problem.reference
        psnr = float(problem.psnr(result.image, ref))
        ssim_value = ssim(result.image, ref, task_problem.protocol)
        psnr_input = float(problem.psnr(problem.x_init, ref))
    manifest: dict[str, Any] = {
        "input": str(job.input),
        "output": str(outputs["image"]),
        "log": str(outputs["csv"]),
        "task": job.task.task,
        "method": job.method,
        "preset": job.preset,
        "degradation": task_problem.info,
        "parameters": job.settings.to_dict(),
        "precision": prepared.precision or result.precision,
        "denoiser": result.denoiser,
        "denoiser_calls": result.denoiser_calls,
        "seed": job.settings.seed,
        "device": str(job.device),
        "iterations": result.iterations,
        "stopped_at": None if result.stop is None else result.stop["stopped_at"],
        "stop": result.stop,
        "tiling": tiling,
        "grouped_with": grouped_with,
        "seconds": round(wall, 3),
        "resumed_from": None if resume is None else resume["algorithm"]["iteration"],
        "rollbacks": result.rollbacks,
        "backtracks": result.backtracks,
        "psnr_protocol": task_problem.protocol,
        "reference": str(job.reference) if job.reference is not None else None,
        "psnr": psnr,
        "psnr_input": psnr_input,
        "ssim": ssim_value,
        "size": {"width": restored.width, "height": restored.height,
                 "channels": restored.channels, "bit_depth": restored.bit_depth},
        "started": prepared.started.isoformat(timespec="seconds"),
        "command": job.command,
        "versions": {
            "deeprestore": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    written: list[Path] = []
    try:  # all or nothing: a failure part-way (full disk, Ctrl-C) removes what this run wrote
        write_image(outputs["image"], restored)
        written.append(outputs["image"])
        write_csv(outputs["csv"], result.log, row_tiles)
        written.append(outputs["csv"])
        if job.compare:
            manifest["compare"] = str(job.compare_path())
            _write_compare(job, observed, restored, reference, psnr, psnr_input)
            written.append(job.compare_path())
        write_json(outputs["json"], manifest)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    job.failure_path().unlink(missing_ok=True)
    job.checkpoint_path().unlink(missing_ok=True)
    return manifest


def whole_image_bytes(task_problem: TaskProblem) -> int:
    """Bytes a tiled run holds for the whole image besides its tiles: in float64 the input, the
    blend's sums and weights, the restored array and the output's encoding; in float32 the
    whole problem's y and x₀ and the blended image twice (output size throughout)."""
    height, width = task_problem.problem.size
    channels = task_problem.problem.channels
    return height * width * (8 * (4 * channels + 1) + 4 * 4 * channels)


def _restore_in_tiles(job: Job, prepared: _Prepared, callback: ProgressCallback | None,
                      notice: Callable[[str], None] | None
                      ) -> tuple[Result, dict[str, Any], Job]:
    """Restore the input in overlapping tiles of ``prepared.tile`` input px, blend them; the
    result (its log: every tile's rows, in order), the manifest's ``tiling`` record and the
    job as it ran (``precision = "auto"`` resolved on the first tile)."""
    task_problem, observed, factor = prepared.task_problem, prepared.observed, prepared.factor
    tile = prepared.tile
    assert tile is not None
    overlap = default_overlap(tile)
    boxes = plan_tiles(observed.height, observed.width, tile, overlap)
    sigma = task_problem.problem.sigma
    first = tile_problem(job.task, observed, sigma, boxes[0].top, boxes[0].left,
                         boxes[0].height, boxes[0].width)
    try:
        cost = estimate_cost(problem_to_device(first.problem, job.device), job.settings,
                             job.device, max_bytes=job.max_memory, probes=prepared.probes)
    except CostError as err:
        raise CostError(f"{job.input}: {job.method} in tiles of {tile} px: {err}") from None
    if cost is not None and cost.precision is not None:
        job = _with_precision(job, cost.precision.precision)
    rows_count = len({box.top for box in boxes})
    grid = [rows_count, len(boxes) // rows_count]
    if cost is not None:
        total = cost.seconds * len(boxes)
        if job.max_minutes is not None and total > 60 * job.max_minutes:
            raise CostError(f"{job.input}: {job.method} in {len(boxes)} tiles would take about "
                            f"{format_duration(total)}: more than --max-minutes "
                            f"{job.max_minutes:g}. {what_fits(job, task_problem, total)}")
        if notice is not None:
            bound = "at most" if job.settings.stop == "auto" else "about"
            notice(f"{job.input}: {job.method} in {grid[0]}×{grid[1]} tiles of {tile} px "
                   f"(overlap {overlap}): {bound} {format_duration(total)} in all; each "
                   f"{cost.describe(job.settings.stop == 'auto')}; plus "
                   f"{format_bytes(whole_image_bytes(task_problem))} for the whole image")
    height, width = task_problem.problem.size
    blender = Blender([box.scaled(factor) for box in boxes], task_problem.problem.channels,
                      height, width)
    log: list[LogRow] = []
    row_tiles: list[int] = []
    records: list[dict[str, Any]] = []
    calls = 0
    per_tile = job.settings.iterations
    tic = time.perf_counter()
    for index, box in enumerate(boxes):
        part = first if index == 0 else tile_problem(job.task, observed, sigma, box.top,
                                                      box.left, box.height, box.width)
        forward = None
        if callback is not None:
            def forward(event: Progress, offset: int = index * per_tile) -> None:
                callback(Progress(offset + event.iteration, per_tile * len(boxes), event.loss,
                                  event.psnr, time.perf_counter() - tic))
        try:
            result = restore(part.problem, job.settings, device=job.device, callback=forward,
                             baselines=part.baselines, denoiser=part.denoiser_for(job.settings))
        except torch.OutOfMemoryError:
            smaller = max(tile // 2 // 32 * 32, MIN_SIDE)
            raise JobError(f"{job.input}: {job.method} ran out of memory on {job.device} with "
                           f"tiles of {tile} px: try --tile {smaller}") from None
        blender.add(box.scaled(factor), result.image)
        log.extend(result.log)
        row_tiles.extend([index] * len(result.log))
        calls += result.denoiser_calls
        records.append({"box": [box.top, box.left, box.height, box.width],
                        "iterations": result.iterations,
                        "stopped_at": None if result.stop is None else result.stop["stopped_at"]})
    blended = Result(image=blender.result().clamp(0.0, 1.0), log=log,
                     iterations=max(r["iterations"] for r in records),
                     seconds=time.perf_counter() - tic, denoiser_calls=calls,
                     denoiser=result.denoiser)
    tiling = {"tile": tile, "overlap": overlap, "grid": grid, "tiles": records,
              "row_tiles": row_tiles}
    if cost is not None and cost.precision is not None:
        blended.precision = cost.precision.record()
    return blended, tiling, job


def _write_compare(job: Job, observed: Image, restored: Image, reference: Image | None,
                   psnr: float | None, psnr_input: float | None) -> None:
    from deeprestore.io.plots import compare_image

    def title(name: str, value: float | None) -> str:
        return name if value is None else f"{name}\n{value:.2f} dB"

    panels = [(title("input", psnr_input), observed.pixels),
              (title(job.method, psnr), restored.pixels)]
    if reference is not None:
        panels.append(("reference", reference.pixels))
    compare_image(panels, job.compare_path())
