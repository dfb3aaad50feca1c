"""Control of a running restore from outside the loop: signals, checkpoints, resume, rollback.

The engine's :class:`~deeprestore.solvers.runner.Runner` takes a :class:`RunControl`. Signals
(SIGINT,
SIGTERM) are not allowed to interrupt an iteration half-way: :class:`SignalFlag` records them and
the runner stops *between* two iterations, where the state is consistent, saves a checkpoint
and raises :class:`Interrupted`. Nothing here knows about files; the job layer decides where a
checkpoint goes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

CheckpointWriter = Callable[[dict[str, Any]], None]


class Interrupted(BaseException):
    """A run stopped by a signal between two iterations; ``signum`` is the signal's number and
    ``checkpoint`` where its state was saved (set by whoever saved it), if anywhere; ``hint``
    how the user continues it (the command that ran it may say)."""

    def __init__(self, signum: int, checkpoint: Any = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpoint = checkpoint
        self.hint = "rerun with --resume to continue"  # how to pick it up again


class OutOfTime(BaseException):
    """A run that reached :attr:`RunControl.deadline` between two iterations, its state saved
    (``checkpoint``: where, set by whoever saved it)."""

    def __init__(self, checkpoint: Any = None) -> None:
        super().__init__("the time budget is spent")
        self.checkpoint = checkpoint


class ResumeError(ValueError):
    """A saved state that this run cannot continue from (one-line message): another number
    of runs, or a perturbation generator of another kind."""


@dataclass
class RunControl:
    """What the runner does besides iterating.

    ``checkpoint``: called with the run's state on an interrupt and every ``checkpoint_every``
    iterations; ``resume``: a state saved that way to continue from; ``max_rollbacks``: how many
    times a NaN/Inf loss may roll the run back to its last good state with the learning rate
    halved before it fails; ``snapshot_every``: how often (in iterations, at logged rows) that
    good state is copied — a copy of Θ and Adam's moments costs about 0.6 network steps on a
    CPU, so not at every row. ``deadline``: a time on ``clock`` (seconds) after which a stateful
    run saves a checkpoint and raises :class:`OutOfTime` between two iterations.
    """

    checkpoint: CheckpointWriter | None = None
    checkpoint_every: int | None = None
    resume: dict[str, Any] | None = None
    max_rollbacks: int = 3
    snapshot_every: int = 100
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic


class SignalFlag:
    """Context manager: while active (main thread only), SIGINT and SIGTERM set ``signum``
    instead of raising; a second signal raises :class:`Interrupted` at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __enter__(self) -> SignalFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
