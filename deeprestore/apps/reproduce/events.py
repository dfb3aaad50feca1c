"""What ``reproduce`` tells its caller: progress events and the errors that end a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deeprestore.io.manifest import Manifest
from deeprestore.solvers.base import Progress as EngineProgress


class ReproduceError(ValueError):
    """A reproduce request that cannot run: unknown table, method or image (one line)."""


class MissingImageError(ReproduceError):
    """An image of the table is not in the data directory (the message names the file)."""


class BudgetSpent(Exception):
    """``--budget-minutes`` ran out: the pair in progress saved a checkpoint (if it was a
    network method) and rerunning the same command continues (one-line message)."""


@dataclass
class ReproduceEvent:
    """What :func:`~deeprestore.apps.reproduce.reproduce_table` reports to its ``progress``
    callback.

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
    manifest: Manifest | None = None
    engine: EngineProgress | None = None


ProgressFn = Callable[[ReproduceEvent], None]
