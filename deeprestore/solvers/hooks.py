"""The jobs of :class:`~deeprestore.solvers.runner.Runner`'s loop besides ``update()``, each a
small object the loop calls at fixed points of an iteration (SigPy's ``App`` callbacks).

An iteration: ``update()``; :meth:`Hook.observe`; the run is finished when the algorithm is
done or a hook :meth:`~Hook.stops` it; at a logged iteration the row is measured and every hook
may refuse it (:meth:`~Hook.accept`: a NaN), in which case all of them :meth:`~Hook.rewind` and
the iteration ends there, else all of them see it :meth:`~Hook.logged`; last
:meth:`~Hook.end_iteration` (save, stop on a signal or the deadline). The hooks, in order:
:class:`StopRule`, :class:`LogRows`, :class:`NaNRollback`, :class:`Checkpoint`,
:class:`Interruption`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deeprestore.solvers.base import Algorithm, LogRow, Progress, ProgressCallback
from deeprestore.solvers.control import Interrupted, OutOfTime, RunControl, SignalFlag
from deeprestore.solvers.stopping import VarianceStop


@dataclass
class LoopState:
    """Where the loop is: ``algorithm``, ``start`` (its ``time.perf_counter()``, earlier by the
    seconds a resumed run had spent), the ``iteration`` just done, whether the run is
    ``finished``, and ``updates``: how many ``update()`` calls this loop made (a number no two
    iterations share, even when a rollback repeats an iteration's number)."""

    algorithm: Algorithm
    start: float
    iteration: int = 0
    finished: bool = False
    updates: int = 0

    def seconds(self) -> float:
        """Wall seconds of the run so far (a resumed run's earlier ones included)."""
        return time.perf_counter() - self.start


class Hook:
    """One job of the loop; each method is a point of the iteration (the module docstring), a
    no-op unless the job needs it."""

    def observe(self, loop: LoopState) -> None:
        """After ``update()``."""

    def stops(self, loop: LoopState) -> bool:
        """Whether the run ends after this iteration although the algorithm is not done."""
        return False

    def accept(self, loop: LoopState, row: LogRow) -> bool:
        """Whether the iteration's measured ``row`` may be logged (False: roll back)."""
        return True

    def rewind(self, loop: LoopState) -> None:
        """A hook refused the row: the run goes back to an earlier state."""

    def logged(self, loop: LoopState, row: LogRow) -> None:
        """``row`` was accepted."""

    def end_iteration(self, loop: LoopState) -> None:
        """Last, before the next iteration (raise to end the run)."""


class StopRule(Hook):
    """The automatic stop: ``stopper`` sees every iteration's network output (on the device,
    nothing read back) and ends the run when it detects the end — read at the logged rows, every
    ``log_every`` iterations (and when the run ends otherwise); a rollback clears its window."""

    def __init__(self, stopper: VarianceStop, log_every: int = 1) -> None:
        self.stopper = stopper
        self.log_every = max(1, log_every)
        self._fired = False

    def observe(self, loop: LoopState) -> None:
        output = loop.algorithm.network_output()
        if output is not None:
            self.stopper.observe(loop.iteration, output, loop.algorithm.estimate)

    def stops(self, loop: LoopState) -> bool:
        if loop.iteration % self.log_every == 0 or loop.algorithm.done():
            self._fired = self.stopper.done
        return self._fired

    def rewind(self, loop: LoopState) -> None:
        self.stopper.forget_window()


class LogRows(Hook):
    """The log: each accepted row appended to ``log``, and reported to ``callback``."""

    def __init__(self, log: list[LogRow], callback: ProgressCallback | None) -> None:
        self.log = log
        self.callback = callback

    def logged(self, loop: LoopState, row: LogRow) -> None:
        self.log.append(row)
        if self.callback is not None:
            self.callback(Progress(row.iteration, loop.algorithm.total, row.loss, row.psnr,
                                   row.seconds))


class NaNRollback(Hook):
    """A loss or gap that is NaN/Inf rolls a stateful run back to its last good state (a copy
    taken at a logged row every ``control.snapshot_every`` iterations) with the learning rate
    halved, at most ``control.max_rollbacks`` times; otherwise the run fails with
    FloatingPointError. Each rollback is recorded in ``rollbacks``; ``log`` loses the rows
    after the good state."""

    def __init__(self, loop: LoopState, control: RunControl, log: list[LogRow],
                 rollbacks: list[dict[str, Any]]) -> None:
        self.algorithm = loop.algorithm
        self.control = control
        self.log = log
        self.rollbacks = rollbacks
        #: the last good state and the length of the log then (None: not stateful)
        self.good = ((self.algorithm.state_dict(), len(log)) if self.algorithm.stateful
                     else None)

    def accept(self, loop: LoopState, row: LogRow) -> bool:
        if all(math.isfinite(v) for v in (row.loss, row.gap or 0.0)):
            return True
        if self.good is None or len(self.rollbacks) >= self.control.max_rollbacks:
            tried = f" after {len(self.rollbacks)} rollbacks" if self.rollbacks else ""
            raise FloatingPointError(
                f"the loss became {row.loss} at iteration {loop.iteration}{tried}")
        return False

    def rewind(self, loop: LoopState) -> None:
        assert self.good is not None
        self.algorithm.load_state_dict(self.good[0])
        del self.log[self.good[1]:]
        rate = self.algorithm.scale_learning_rate(0.5)
        self.rollbacks.append({"at": loop.iteration, "back_to": self.algorithm.iteration,
                               "lr": rate})

    def logged(self, loop: LoopState, row: LogRow) -> None:
        if (self.control.max_rollbacks > 0 and self.good is not None
                and loop.iteration - self.good[0]["iteration"] >= self.control.snapshot_every):
            self.good = (self.algorithm.state_dict(), len(self.log))


class Interruption(Hook):
    """SIGINT/SIGTERM (``flag``) and, for a stateful run, the deadline (``control.deadline`` on
    ``control.clock``): the run raises :class:`~deeprestore.solvers.control.Interrupted` or
    :class:`~deeprestore.solvers.control.OutOfTime` between two iterations, after
    :class:`Checkpoint` saved it."""

    def __init__(self, flag: SignalFlag, control: RunControl, stateful: bool) -> None:
        self.flag = flag
        self.control = control
        self.stateful = stateful
        self._late: tuple[int, bool] | None = None  # (loop.updates, out of time then)

    def out_of_time(self, loop: LoopState) -> bool:
        """Whether the deadline has passed (the clock read once per iteration)."""
        if self._late is None or self._late[0] != loop.updates:
            deadline = self.control.deadline
            late = (self.stateful and not loop.finished and deadline is not None
                    and self.control.clock() >= deadline)
            self._late = (loop.updates, late)
        return self._late[1]

    def due(self, loop: LoopState) -> bool:
        """Whether the run ends after this iteration (a signal came or the deadline passed)."""
        late = self.out_of_time(loop)
        return self.flag.signum is not None or late

    def end_iteration(self, loop: LoopState) -> None:
        late = self.out_of_time(loop)
        if self.flag.signum is not None:
            raise Interrupted(self.flag.signum)
        if late:
            raise OutOfTime()


class Checkpoint(Hook):
    """``control.checkpoint`` is given the run's state (``state(loop)``) every
    ``control.checkpoint_every`` iterations before the last, and when ``interruption`` ends
    the run."""

    def __init__(self, control: RunControl, state: Callable[[LoopState], dict[str, Any]],
                 interruption: Interruption) -> None:
        assert control.checkpoint is not None
        self.save = control.checkpoint
        self.every = control.checkpoint_every
        self.state = state
        self.interruption = interruption

    def end_iteration(self, loop: LoopState) -> None:
        every = self.every
        if self.interruption.due(loop) or (every and loop.iteration % every == 0
                                           and not loop.finished):
            self.save(self.state(loop))
