"""Preparing a job: read and check its input, build its problem, load its checkpoint, estimate
its cost (which may resolve ``precision = "auto"``), and decide whether it runs in tiles."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from deeprestore.apps.jobs.checkpoints import load_checkpoint
from deeprestore.apps.jobs.job import DAY_MINUTES, Job, JobError
from deeprestore.arrays import Image, ImageError
from deeprestore.io.images import MIN_SIDE, check_min_side, read_image
from deeprestore.solvers.base import problem_to_device
from deeprestore.solvers.cost import CostError, CostEstimate, estimate_cost, format_duration
from deeprestore.solvers.memory import release_device_memory
from deeprestore.solvers.precision import AUTO, PrecisionChoice
from deeprestore.solvers.timing import denoiser_seconds
from deeprestore.tasks.problem import TaskProblem, build_problem
from deeprestore.tasks.registry import DENOISE, SUPERRES
from deeprestore.tiles import default_overlap

Notice = Callable[[str], None]


@dataclass
class Prepared:
    """A job read and checked, ready to run: its input, problem, saved state and tiling;
    ``job``: the job with ``precision = "auto"`` resolved (by the cost estimate, or as the
    checkpoint it continues from; a tiled job's is resolved on its first tile)."""

    started: datetime
    observed: Image
    reference: Image | None
    task_problem: TaskProblem
    resume: dict[str, Any] | None
    factor: int
    job: Job
    tile: int | None = None
    cost: CostEstimate | None = None  # the whole image's, when it runs whole
    probes: tuple[int, int] | None = None  # the memory model's, for the tiles' estimate
    precision: dict[str, Any] | None = None  # how ``auto`` was resolved, for the manifest


def prepare(job: Job, notice: Notice | None) -> Prepared:
    """Read ``job``'s input, build its problem, load its checkpoint, print σ and the cost;
    decide whether it runs in tiles. Raises what makes the job impossible (nothing written)."""
    started = datetime.now(timezone.utc)
    observed = _read_input(job)
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
        job = job.with_precision(resume["precision"])
        precision = PrecisionChoice(resume["precision"], AUTO,
                                    reason="as the checkpoint it continued").record()
    factor = int(task_problem.info.get("factor") or 1) if job.task.task == SUPERRES.name else 1
    prepared = Prepared(started, observed, reference, task_problem, resume, factor, job,
                        tile=job.tile, precision=precision)
    release_device_memory(job.device)  # what earlier jobs cached counts as free
    if prepared.tile is None or prepared.tile >= max(observed.height, observed.width):
        prepared.tile = None
        _estimate_whole(prepared, notice)
    if prepared.tile is not None and (resume is not None or job.checkpoint_every):
        raise JobError(f"{job.input}: a tiled run cannot be checkpointed or resumed (yet); "
                       "drop --checkpoint-every/--resume")
    return prepared


def _read_input(job: Job) -> Image:
    """``job``'s input image, refused (:class:`ImageError`) when too small or over
    ``job.max_pixels``."""
    observed = read_image(job.input)
    check_min_side(observed, job.input)
    if job.max_pixels is not None and observed.height * observed.width > job.max_pixels:
        raise ImageError(
            f"{job.input}: {observed.width}×{observed.height} is larger than the limit of "
            f"{job.max_pixels} pixels (raise it with --max-pixels, e.g. --max-pixels 8192x8192)"
        )
    return observed


def _estimate_whole(prepared: Prepared, notice: Notice | None) -> None:
    """Estimate the whole image's run into ``prepared`` (its cost, resolved precision), or,
    when it does not fit in memory and tiles may be used, the tile side to use instead;
    raise :class:`CostError` when it can run neither way."""
    job, task_problem, resume = prepared.job, prepared.task_problem, prepared.resume
    done = 0 if resume is None else int(resume["algorithm"]["iteration"])
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
                and err.fits_side // prepared.factor >= MIN_SIDE):
            raise CostError(f"{job.input}: {job.method} {err}", err.fits_side) from None
        prepared.probes = None if err.model is None else err.model.probes
        tile = err.fits_side // prepared.factor
        prepared.tile = tile - default_overlap(tile)  # the boxes are the tile plus the overlap
        if notice is not None:
            notice(f"{job.input}: too large to restore whole ({err}); restoring it in tiles")
        return
    prepared.cost = cost
    if notice is not None and cost is not None:
        notice(f"{job.input}: {job.method} {cost.describe(job.settings.stop == 'auto')}")
    if cost is not None and cost.precision is not None:
        prepared.job = job.with_precision(cost.precision.precision)
        prepared.precision = cost.precision.record()


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

    if job.task.task == DENOISE.name:
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
