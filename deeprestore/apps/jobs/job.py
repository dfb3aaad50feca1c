"""One restoration job: the input file, its method and settings, where its outputs go.

Outputs for ``photo.png`` restored with ``deepred`` into ``OUT/``:

- ``OUT/photo_deepred.png``: the restored image (same channels and bit depth as the input);
- ``OUT/photo_deepred.csv``: the log (see :data:`deeprestore.io.writers.CSV_COLUMNS`);
- ``OUT/photo_deepred.json``: the manifest (:class:`~deeprestore.io.manifest.Manifest`).

An image that fails leaves none of those, only ``OUT/photo_deepred.failed.json`` (input, method,
error), which ``deeprestore summary`` reports and a later successful run removes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from deeprestore.config.settings import Settings
from deeprestore.io.inputs import DEFAULT_MAX_PIXELS
from deeprestore.io.writers import write_json
from deeprestore.tasks.options import TaskOptions

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

    def with_precision(self, precision: str) -> Job:
        """This job with its settings' ``auto`` precision resolved to ``precision``."""
        return replace(self, settings=replace(self.settings, precision=precision))


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
