"""Restoring a job in overlapping tiles (an image too large to restore whole), blended into one
result with one log (every tile's rows, in order)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from deeprestore.apps.jobs.job import Job, JobError
from deeprestore.apps.jobs.prepare import Notice, Prepared, what_fits
from deeprestore.io.images import MIN_SIDE
from deeprestore.models.skip import half_side
from deeprestore.solvers.base import LogRow, Progress, ProgressCallback, Result, problem_to_device
from deeprestore.solvers.cost import (
    CostError,
    CostEstimate,
    estimate_cost,
    format_bytes,
    format_duration,
)
from deeprestore.solvers.runner import restore
from deeprestore.tasks.problem import TaskProblem, tile_problem
from deeprestore.tiles import Blender, Box, default_overlap, plan_tiles


def whole_image_bytes(task_problem: TaskProblem) -> int:
    """Bytes a tiled run holds for the whole image besides its tiles: in float64 the input, the
    blend's sums and weights, the restored array and the output's encoding; in float32 the
    whole problem's y and x₀ and the blended image twice (output size throughout)."""
    height, width = task_problem.problem.size
    channels = task_problem.problem.channels
    return height * width * (8 * (4 * channels + 1) + 4 * 4 * channels)


@dataclass
class TiledRun:
    """The result of a tiled restore: the blended ``result``, the manifest's ``tiling`` record,
    each log row's tile (``row_tiles``) and the job as it ran (``auto`` precision resolved on
    the first tile)."""

    result: Result
    tiling: dict[str, Any]
    row_tiles: list[int]
    job: Job


def restore_in_tiles(job: Job, prepared: Prepared, callback: ProgressCallback | None,
                     notice: Notice | None) -> TiledRun:
    """Restore the input in overlapping tiles of ``prepared.tile`` input px and blend them."""
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
        job = job.with_precision(cost.precision.precision)
    rows_count = len({box.top for box in boxes})
    grid = [rows_count, len(boxes) // rows_count]
    if cost is not None:
        _check_and_announce(job, prepared, cost, len(boxes), overlap, grid, notice)
    height, width = task_problem.problem.size
    blender = Blender([box.scaled(factor) for box in boxes], task_problem.problem.channels,
                      height, width)
    log: list[LogRow] = []
    row_tiles: list[int] = []
    records: list[dict[str, Any]] = []
    calls = 0
    tic = time.perf_counter()
    for index, box in enumerate(boxes):
        part = first if index == 0 else tile_problem(job.task, observed, sigma, box.top,
                                                      box.left, box.height, box.width)
        result = _restore_tile(job, part, tile, _tile_progress(callback, job, index,
                                                               len(boxes), tic))
        blender.add(box.scaled(factor), result.image)
        log.extend(result.log)
        row_tiles.extend([index] * len(result.log))
        calls += result.denoiser_calls
        records.append(_tile_record(box, result))
    blended = Result(image=blender.result().clamp(0.0, 1.0), log=log,
                     iterations=max(r["iterations"] for r in records),
                     seconds=time.perf_counter() - tic, denoiser_calls=calls,
                     denoiser=result.denoiser)
    tiling = {"tile": tile, "overlap": overlap, "grid": grid, "tiles": records}
    if cost is not None and cost.precision is not None:
        blended.precision = cost.precision.record()
    return TiledRun(blended, tiling, row_tiles, job)


def _check_and_announce(job: Job, prepared: Prepared, cost: CostEstimate, tiles: int,
                        overlap: int, grid: list[int], notice: Notice | None) -> None:
    """Refuse a tiled run over ``job.max_minutes`` (:class:`CostError`); else say its cost
    (``tiles`` tiles overlapping by ``overlap`` px, in [rows, columns] ``grid``)."""
    total = cost.seconds * tiles
    if job.max_minutes is not None and total > 60 * job.max_minutes:
        raise CostError(f"{job.input}: {job.method} in {tiles} tiles would take about "
                        f"{format_duration(total)}: more than --max-minutes "
                        f"{job.max_minutes:g}. {what_fits(job, prepared.task_problem, total)}")
    if notice is not None:
        tile = prepared.tile
        bound = "at most" if job.settings.stop == "auto" else "about"
        notice(f"{job.input}: {job.method} in {grid[0]}×{grid[1]} tiles of {tile} px "
               f"(overlap {overlap}): {bound} {format_duration(total)} in "
               f"all; each {cost.describe(job.settings.stop == 'auto')}; plus "
               f"{format_bytes(whole_image_bytes(prepared.task_problem))} for the whole image")


def _tile_progress(callback: ProgressCallback | None, job: Job, index: int, tiles: int,
                   tic: float) -> ProgressCallback | None:
    """``callback`` told the iteration of the whole tiled run (tile ``index`` of ``tiles``)."""
    if callback is None:
        return None
    per_tile = job.settings.iterations

    def forward(event: Progress) -> None:
        callback(Progress(index * per_tile + event.iteration, per_tile * tiles, event.loss,
                          event.psnr, time.perf_counter() - tic))
    return forward


def _restore_tile(job: Job, part: TaskProblem, tile: int,
                  callback: ProgressCallback | None) -> Result:
    """One tile's restore; running out of memory becomes a one-line :class:`JobError`."""
    try:
        return restore(part.problem, job.settings, device=job.device, callback=callback,
                       baselines=part.baselines, denoiser=part.denoiser_for(job.settings))
    except torch.OutOfMemoryError:
        smaller = max(half_side(tile), MIN_SIDE)
        raise JobError(f"{job.input}: {job.method} ran out of memory on {job.device} with "
                       f"tiles of {tile} px: try --tile {smaller}") from None


def _tile_record(box: Box, result: Result) -> dict[str, Any]:
    """The manifest's record of one tile: its box (top, left, height, width), iterations, stop."""
    return {"box": [box.top, box.left, box.height, box.width], "iterations": result.iterations,
            "stopped_at": None if result.stop is None else result.stop["stopped_at"]}
