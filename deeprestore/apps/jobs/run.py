"""Running jobs: one alone (:func:`run_job`, whole or in tiles) or several network problems of
one shape stepped together (:func:`run_jobs_together`); each writes its own outputs."""

from __future__ import annotations

import time

import torch

from deeprestore.apps.jobs.checkpoints import save_checkpoint
from deeprestore.apps.jobs.job import Job, JobError
from deeprestore.apps.jobs.outputs import RunRecord, finish
from deeprestore.apps.jobs.prepare import Notice, Prepared, prepare
from deeprestore.apps.jobs.tiled import restore_in_tiles
from deeprestore.io.images import MIN_SIDE
from deeprestore.io.manifest import Manifest
from deeprestore.models.skip import half_side
from deeprestore.solvers.base import ProgressCallback
from deeprestore.solvers.control import Interrupted, OutOfTime, ResumeError, RunControl
from deeprestore.solvers.cost import format_bytes
from deeprestore.solvers.memory import available_memory, release_device_memory
from deeprestore.solvers.precision import AUTO
from deeprestore.solvers.runner import restore, restore_together


def _control(job: Job, prepared: Prepared) -> RunControl:
    return RunControl(checkpoint=lambda state: save_checkpoint(job, state),
                      checkpoint_every=job.checkpoint_every, resume=prepared.resume,
                      deadline=job.deadline, clock=job.clock)


def _run_failure(job: Job, prepared: Prepared, error: BaseException,
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
        side = half_side(max(prepared.observed.height, prepared.observed.width))
        return JobError(f"{job.input}: {job.method} ran out of memory on {job.device}: "
                        f"try --tile {max(side, MIN_SIDE)}")
    if isinstance(error, ResumeError):
        return JobError(f"{job.checkpoint_path()}: {error}; delete it or run without --resume")
    return error


def run_job(job: Job, callback: ProgressCallback | None = None,
            notice: Notice | None = None) -> Manifest:
    """Restore ``job.input``; write image, CSV and manifest; return the manifest.

    ``notice`` gets one-line messages before the run starts (the estimated σ; the expected
    time and peak memory, :func:`deeprestore.solvers.cost.estimate_cost`, which also refuses a
    run that would not fit with :class:`~deeprestore.solvers.cost.CostError`).

    Ctrl-C / SIGTERM save a checkpoint (network methods) and raise
    :class:`~deeprestore.solvers.control.Interrupted` with its path; ``job.resume`` continues
    from it.
    """
    prepared = prepare(job, notice)
    job = prepared.job
    tic = time.perf_counter()
    if prepared.tile is not None:
        tiled = restore_in_tiles(job, prepared, callback, notice)
        return finish(tiled.job, prepared, tiled.result,
                      RunRecord(time.perf_counter() - tic, tiled.tiling, tiled.row_tiles))
    try:
        result = restore(prepared.task_problem.problem, job.settings, device=job.device,
                         callback=callback, baselines=prepared.task_problem.baselines,
                         denoiser=prepared.task_problem.denoiser_for(job.settings),
                         control=_control(job, prepared))
    except (Interrupted, OutOfTime, torch.OutOfMemoryError, ResumeError) as error:
        failure = _run_failure(job, prepared, error)
    else:
        return finish(job, prepared, result, RunRecord(time.perf_counter() - tic))
    release_device_memory(job.device)  # the failed run's tensors are unreachable by now
    raise failure


def run_jobs_together(jobs: list[Job], callbacks: list[ProgressCallback | None] | None = None,
                      notice: Notice | None = None) -> list[Manifest | BaseException]:
    """Restore several jobs of network methods whose problems have one network shape (the same
    size, :func:`~deeprestore.solvers.grouping.group_key`), their Θ-steps grouped into one network
    (:func:`~deeprestore.solvers.runner.restore_together`); each job writes its own outputs as
    :func:`run_job` would (its manifest says ``grouped_with``: how many problems stepped
    together; ``seconds``: the group's wall time). Returns each job's manifest, or the
    exception that ended it (a job that cannot be prepared, or wants tiles, fails alone
    without stopping the others; tiled jobs are refused here).
    """
    callbacks = list(callbacks) if callbacks is not None else [None] * len(jobs)
    outcomes: list[Manifest | BaseException | None] = [None] * len(jobs)
    ready: list[tuple[int, Prepared]] = []
    jobs = list(jobs)
    auto = any(job.settings.precision == AUTO for job in jobs)
    for index, job in enumerate(jobs):
        try:
            prepared = prepare(job, notice)
            if prepared.tile is not None:
                raise JobError(f"{job.input}: {job.method} needs tiles, which are not grouped")
        except Exception as error:  # this job fails; the others go on
            outcomes[index] = error
            continue
        jobs[index] = prepared.job
        ready.append((index, prepared))
    if ready and auto:  # one network shape, one arithmetic: the first's, and its record
        first, record = jobs[ready[0][0]].settings.precision, ready[0][1].precision
        for index, prepared in ready:
            jobs[index] = jobs[index].with_precision(first)
            prepared.precision = record
    for chunk in _fitting_chunks(ready, jobs[0].device if jobs else torch.device("cpu"),
                                 notice):
        _run_chunk(jobs, chunk, callbacks, outcomes, notice)
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _fitting_chunks(ready: list[tuple[int, Prepared]], device: torch.device,
                    notice: Notice | None) -> list[list[tuple[int, Prepared]]]:
    """``ready`` in consecutive groups whose predicted peaks (each job's own estimate) add up
    to no more than the device's available memory — all of them in one group when they fit."""
    available = available_memory(device)
    peaks = [prepared.cost.peak_bytes if prepared.cost is not None else 0
             for _, prepared in ready]
    if available is None or sum(peaks) <= available:
        return [ready] if ready else []
    chunks: list[list[tuple[int, Prepared]]] = [[]]
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


def _run_chunk(jobs: list[Job], chunk: list[tuple[int, Prepared]],
               callbacks: list[ProgressCallback | None],
               outcomes: list[Manifest | BaseException | None],
               notice: Notice | None) -> None:
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
            outcomes[index] = finish(job, prepared, result,
                                     RunRecord(wall, grouped_with=len(chunk)))
        except Exception as error:
            outcomes[index] = error
    del results
    release_device_memory(jobs[chunk[0][0]].device)
