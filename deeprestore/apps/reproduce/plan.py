"""A budgeted table's plan: before anything runs, the estimated cost of every pair still to do
(one step and one denoiser call timed per method and image size) and whether it fits."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from deeprestore.apps.jobs import Job, JobError, load_checkpoint
from deeprestore.apps.reproduce.events import ReproduceEvent
from deeprestore.apps.reproduce.prepare import task_options
from deeprestore.io.images import read_image
from deeprestore.io.manifest import read_manifest
from deeprestore.methods import NETWORK_METHODS
from deeprestore.solvers.base import problem_to_device
from deeprestore.solvers.cost import CostError, estimate_cost, format_duration
from deeprestore.tasks.problem import build_problem

if TYPE_CHECKING:
    from deeprestore.apps.reproduce.table import TableRun

#: per (method, image size): seconds of one step and of one denoiser call
Timings = dict[tuple[str, tuple[int, int]], tuple[float, float]]


def report_plan(table: TableRun, deadline: float) -> None:
    """Prepare every image of ``table`` and report (``"plan"`` events) each unfinished pair's
    estimated cost and whether it fits before ``deadline`` (on the table's clock).

    Estimating costs a timed step per method and size (seconds each on a GPU, where cuDNN
    autotunes every new shape): the plan stops measuring at half the budget, and once what it
    planned no longer fits.
    """
    clock = table.options.clock
    now = clock()
    planned, left = 0.0, deadline - now
    plan_until = now + left / 2

    def may_measure() -> bool:
        return planned <= left and clock() < plan_until

    timings: Timings = {}
    for entry in table.present:
        record, fresh = table.prepared(entry)
        image_dir = table.table_dir / entry.name
        options = task_options(table.bench, record, image_dir)
        for method in table.job_methods:
            job = table.make_job(image_dir, method, options)
            if table.finished(read_manifest(job.outputs()["json"]), job, fresh):
                continue
            where = dict(table=table.bench.name, image=entry.name, method=method)
            try:
                seconds = pair_seconds(job, fresh or table.options.force, timings, may_measure)
            except CostError as err:  # it fails when its turn comes; the plan goes on
                table.report(ReproduceEvent("plan", **where, message=f"cannot run: {err}"))
                continue
            if seconds is None:
                why = ("the pairs before it already fill the budget" if planned > left
                       else "the plan stopped measuring at half the budget")
                table.report(ReproduceEvent("plan", **where,
                                            message=f"not estimated ({why}): a later job"))
                continue
            planned += seconds
            fits = "this job" if planned <= left else "does not fit: checkpointed or next job"
            table.report(ReproduceEvent("plan", **where, message=(
                f"about {format_duration(seconds)}, {format_duration(planned)} so far of "
                f"{format_duration(max(left, 0.0))} left: {fits}")))


def pair_seconds(job: Job, start_over: bool, timings: Timings,
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
