"""Restoration jobs: read an input, build the task's problem, run the engine, write outputs.

The glue between the command line (or ``reproduce``) and the engine; it owns file names, the
checkpoint and the manifest. :class:`Job` says what to do (:mod:`.job`); :func:`run_job` and
:func:`run_jobs_together` do it (:mod:`.run`): :mod:`.prepare` reads and checks the input and
estimates the cost, :mod:`.tiled` restores an image too large for memory in tiles,
:mod:`.outputs` writes the image, the log and the manifest all or nothing, :mod:`.checkpoints`
saves and reads an interrupted run's state.
"""

from deeprestore.apps.jobs.checkpoints import load_checkpoint, save_checkpoint
from deeprestore.apps.jobs.job import (
    DAY_MINUTES,
    Job,
    JobError,
    check_outputs,
    failure_path,
    record_failure,
)
from deeprestore.apps.jobs.run import run_job, run_jobs_together

__all__ = ["DAY_MINUTES", "Job", "JobError", "check_outputs", "failure_path", "load_checkpoint",
           "record_failure", "run_job", "run_jobs_together", "save_checkpoint"]
