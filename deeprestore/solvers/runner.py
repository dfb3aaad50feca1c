"""The loop that runs any :class:`~deeprestore.solvers.base.Algorithm` (SigPy's ``App``).

:class:`Runner` calls ``update()`` until ``done()``, logs every ``log_every`` iterations (the
only host↔device synchronisation of the loop), reports progress through a callback, rolls back
a NaN, saves checkpoints, stops on a signal or a deadline, and feeds the automatic stop —
each of these a hook (:mod:`deeprestore.solvers.hooks`).
:func:`restore` runs one problem; :func:`restore_together` several, their network steps grouped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution, configured_backends
from deeprestore.methods import NETWORK_METHODS
from deeprestore.solvers.base import (
    Algorithm,
    LogRow,
    Problem,
    ProgressCallback,
    Result,
    problem_to_device,
)
from deeprestore.solvers.control import (
    Interrupted,
    OutOfTime,
    ResumeError,
    RunControl,
    SignalFlag,
)
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.grouping import ProblemGroup
from deeprestore.solvers.hooks import (
    Checkpoint,
    Hook,
    Interruption,
    LogRows,
    LoopState,
    NaNRollback,
    StopRule,
)
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.precision import AUTO
from deeprestore.solvers.stopping import VarianceStop
from deeprestore.solvers.timing import choose_precision


class Runner:
    """Drives an :class:`Algorithm` to the end, logging every ``log_every`` iterations.

    With a :class:`~deeprestore.solvers.control.RunControl`: continues from a saved state, saves
    states (every ``checkpoint_every`` iterations, and when SIGINT/SIGTERM arrives — then it
    raises :class:`~deeprestore.solvers.control.Interrupted` between two iterations), and when
    the loss or x turns NaN/Inf rolls back to the last logged good state with the learning rate
    halved, at most ``max_rollbacks`` times (stateful algorithms only; otherwise the run fails
    at once). Each of these jobs is a hook of the loop (:mod:`deeprestore.solvers.hooks`).

    With a ``stopper`` (:class:`~deeprestore.solvers.stopping.VarianceStop`) it feeds it every
    iteration's network output and ends the run early when the stopper is done; the image
    returned is then the stopper's estimate at its detected iteration.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        problem: Problem,
        log_every: int,
        callback: ProgressCallback | None = None,
        control: RunControl | None = None,
        stopper: VarianceStop | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.stopper = stopper
        self.problem = problem
        self.log_every = log_every
        self.callback = callback
        self.control = control if control is not None else RunControl()
        self.log: list[LogRow] = []
        self.rollbacks: list[dict[str, Any]] = []
        self._offset = 0.0  # seconds already spent before a resume
        self._resumed = False

    def _measure(self) -> torch.Tensor | None:
        if self.problem.reference is None or self.problem.psnr is None:
            return None
        return self.problem.psnr(self.algorithm.estimate(), self.problem.reference)

    def run(self) -> Result:
        """Iterate until done; return the result with the log."""
        try:
            with SignalFlag() as flag:
                return _drive(self.iterations(flag))
        finally:
            self.algorithm.close()

    def state(self, seconds: float) -> dict[str, Any]:
        """The runner's checkpoint: the algorithm's state, the log so far, the elapsed time."""
        state = {"algorithm": self.algorithm.state_dict(),
                 "log": [vars(row).copy() for row in self.log],
                 "rollbacks": list(self.rollbacks), "seconds": seconds}
        if self.stopper is not None:
            state["stopper"] = self.stopper.state_dict()
        return state

    def prepare(self) -> None:
        """Load the saved state to continue from (``control.resume``), once; the first
        iteration does it if no one did before (:func:`restore_together` does it for every
        problem before any steps, since a grouped step steps them all)."""
        if self.control.resume is not None and not self._resumed:
            try:
                self._resume(self.control.resume)
            except ValueError as err:
                raise ResumeError(f"cannot continue from the saved state: {err}") from None
        self._resumed = True

    def _resume(self, state: dict[str, Any]) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        if self.stopper is not None and state.get("stopper") is not None:
            self.stopper.load_state_dict(state["stopper"], self.problem.y.device)
        self.log = [LogRow(**row) for row in state["log"]]
        self.rollbacks = list(state.get("rollbacks", []))
        self._offset = float(state["seconds"])

    def iterations(self, flag: SignalFlag) -> Generator[int, None, Result]:
        """The run, one iteration per ``next()`` (it yields the iteration's number), its
        :class:`Result` as the generator's return value; :func:`restore_together` interleaves
        several. The loop's other jobs are hooks (:mod:`deeprestore.solvers.hooks`):
        checkpoints and :class:`~deeprestore.solvers.control.Interrupted` /
        :class:`~deeprestore.solvers.control.OutOfTime` as :meth:`run` says."""
        algorithm = self.algorithm
        self.prepare()
        loop = LoopState(algorithm, time.perf_counter() - self._offset)
        hooks = self._hooks(loop, flag)
        loop.finished = _finished(loop, hooks)
        while not loop.finished:
            loss, gap = algorithm.update()
            loop.iteration = algorithm.iteration
            loop.updates += 1
            for hook in hooks:
                hook.observe(loop)
            loop.finished = _finished(loop, hooks)
            if loop.iteration % self.log_every == 0 or loop.finished:
                row = self._row(loop, loss, gap)
                if not all(hook.accept(loop, row) for hook in hooks):
                    for hook in hooks:
                        hook.rewind(loop)
                    loop.finished = False
                    yield loop.iteration  # one update per step, in a group too
                    continue
                for hook in hooks:
                    hook.logged(loop, row)
            for hook in hooks:
                hook.end_iteration(loop)
            yield loop.iteration
        return self._result(loop)

    def _hooks(self, loop: LoopState, flag: SignalFlag) -> list[Hook]:
        """The loop's jobs, in the order they are called (:mod:`deeprestore.solvers.hooks`)."""
        control, stateful = self.control, self.algorithm.stateful
        hooks: list[Hook] = [] if self.stopper is None else [StopRule(self.stopper,
                                                                     self.log_every)]
        hooks += [LogRows(self.log, self.callback),
                  NaNRollback(loop, control, self.log, self.rollbacks)]
        interruption = Interruption(flag, control, stateful)
        if stateful and control.checkpoint is not None:
            hooks.append(Checkpoint(control, lambda at: self.state(at.seconds()), interruption))
        return [*hooks, interruption]

    def _row(self, loop: LoopState, loss: torch.Tensor, gap: torch.Tensor | None) -> LogRow:
        """The logged row of this iteration: the loss, PSNR and gap read back from the device
        in one transfer, the seconds so far, the denoiser's age, λ and µ, the stop signal."""
        algorithm = self.algorithm
        with torch.no_grad():
            psnr = self._measure()
        values = [loss, *(v for v in (psnr, gap) if v is not None)]
        numbers = torch.stack([v.float().reshape(()) for v in values]).tolist()
        loss_value = numbers.pop(0)
        psnr_value = numbers.pop(0) if psnr is not None else None
        gap_value = numbers.pop(0) if gap is not None else None
        return LogRow(loop.iteration, loss_value, psnr_value, gap_value, loop.seconds(),
                      algorithm.denoiser_age(), *algorithm.weights(),
                      stop_signal=None if self.stopper is None else self.stopper.signal)

    def _result(self, loop: LoopState) -> Result:
        """The finished run: the estimate (the stopper's at its detected iteration, when it
        stopped the run) clamped to [0, 1] on the CPU, the log and the counters."""
        algorithm, stopper = self.algorithm, self.stopper
        estimate = algorithm.estimate()
        if stopper is not None and stopper.done and stopper.best_estimate is not None:
            estimate = stopper.best_estimate
        image = estimate.detach().float().clamp(0.0, 1.0).cpu()
        return Result(
            image=image,
            log=self.log,
            iterations=algorithm.iteration,
            seconds=loop.seconds(),
            denoiser_calls=algorithm.denoiser_calls,
            denoiser=algorithm.denoiser_name,
            rollbacks=self.rollbacks,
            backtracks=algorithm.backtrack_events(),
            stop=None if stopper is None else stopper.report(algorithm.total),
        )


def _finished(loop: LoopState, hooks: Sequence[Hook]) -> bool:
    """Whether the run ends: the algorithm is done, or a hook (the automatic stop) ends it."""
    return loop.algorithm.done() or any(hook.stops(loop) for hook in hooks)


def restore(
    problem: Problem,
    settings: Settings,
    *,
    device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
    denoiser: Denoiser | None = None,
    baselines: dict[str, Callable[[Problem], torch.Tensor]] | None = None,
    control: RunControl | None = None,
    execution: Execution = DEFAULT_EXECUTION,
) -> Result:
    """Run ``settings.method`` on ``problem`` and return the restored image and its log.

    ``problem``'s tensors are moved to ``device``; ``callback`` receives a
    :class:`~deeprestore.solvers.base.Progress` every ``settings.log_every`` iterations;
    ``denoiser`` overrides ``settings.denoiser``;
    ``baselines`` maps extra one-shot method names to functions of the problem; ``control``:
    checkpoints, resume and NaN rollback (:class:`~deeprestore.solvers.control.RunControl`);
    ``execution``: how the network steps run (:class:`~deeprestore.execution.Execution`).
    ``settings.precision = "auto"`` is chosen here by timing a step in each candidate
    (:func:`~deeprestore.solvers.timing.choose_precision`; the result's ``precision`` says how);
    callers that estimated the cost first pass the precision it chose instead.
    """
    settings.validate()
    device = torch.device(device)
    with configured_backends(device, settings.precision):
        problem = problem_to_device(problem, device)
        settings, choice = _resolved_precision(problem, settings, device, execution)
        algorithm = make_algorithm(problem, settings, device, denoiser, baselines, execution)
        stopper = (VarianceStop(settings.stop_window, settings.stop_patience)
                   if settings.stop == "auto" and settings.method in NETWORK_METHODS else None)
        result = Runner(algorithm, problem, settings.log_every, callback, control,
                        stopper).run()
        result.precision = choice
        return result


def _resolved_precision(problem: Problem, settings: Settings, device: torch.device,
                        execution: Execution) -> tuple[Settings, dict[str, Any] | None]:
    """``settings`` with ``precision = "auto"`` resolved, and the record of how (None when it
    was not ``auto``)."""
    if settings.precision != AUTO:
        return settings, None
    choice = choose_precision(problem, settings, device, execution)
    return replace(settings, precision=choice.precision), choice.record()


def _drive(steps: Generator[int, None, Result]) -> Result:
    """Run a :meth:`Runner.iterations` generator to its end; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def restore_together(
    problems: Sequence[Problem],
    settings: Sequence[Settings],
    *,
    device: torch.device | str = "cpu",
    callbacks: Sequence[ProgressCallback | None] | None = None,
    controls: Sequence[RunControl | None] | None = None,
    execution: Execution = DEFAULT_EXECUTION,
    notice: Callable[[str], None] | None = None,
    denoisers: Sequence[Denoiser | None] | None = None,
) -> list[Result | BaseException]:
    """Run several network problems at once, their Θ-steps grouped into one network
    (:mod:`deeprestore.solvers.grouping`); return each one's :class:`Result`, or the exception that
    ended it (a failure, :class:`~deeprestore.solvers.control.Interrupted`, OutOfTime), in order.

    Each problem keeps its own settings (method, seed, iterations, stop rule, rules of the
    reference code), z, Adam state, x, u, denoiser schedule, log, checkpoints and callback, and
    its result is its :func:`restore` result up to rounding. Problems must share
    :func:`~deeprestore.solvers.grouping.group_key` (network shape, size, precision); one that
    finishes first leaves the group. ``problems[i]``'s tensors are moved to ``device``. A
    grouped step that runs out of device memory splits the group in two and goes on
    (``notice`` is told); a problem that runs out of memory alone fails alone. ``denoisers``:
    each problem's f in place of its ``settings.denoiser`` (None: the registry's).
    """
    count = len(problems)
    if len(settings) != count:
        raise ValueError("one Settings per problem")
    device = torch.device(device)
    precision = settings[0].precision if settings else "float32"
    with configured_backends(device, precision):
        if precision == AUTO:  # one choice for all: they share the network's shape and size
            first, _ = _resolved_precision(problem_to_device(problems[0], device), settings[0],
                                           device, execution)
            settings = [replace(own, precision=first.precision) for own in settings]
        return _restore_together(problems, settings, device, callbacks, controls, execution,
                                 notice, denoisers)


def _restore_together(
    problems: Sequence[Problem],
    settings: Sequence[Settings],
    device: torch.device,
    callbacks: Sequence[ProgressCallback | None] | None,
    controls: Sequence[RunControl | None] | None,
    execution: Execution,
    notice: Callable[[str], None] | None,
    denoisers: Sequence[Denoiser | None] | None,
) -> list[Result | BaseException]:
    count = len(problems)
    callbacks = list(callbacks) if callbacks is not None else [None] * count
    controls = list(controls) if controls is not None else [None] * count
    chosen = list(denoisers) if denoisers is not None else [None] * count
    runners: list[Runner] = []
    for problem, own, callback, control, denoiser in zip(problems, settings, callbacks,
                                                         controls, chosen, strict=True):
        own.validate()
        if own.method not in NETWORK_METHODS:
            raise ValueError(f"restore_together runs network methods, not {own.method!r}")
        moved = problem_to_device(problem, device)
        algorithm = make_algorithm(moved, own, device, denoiser, execution=execution)
        stopper = (VarianceStop(own.stop_window, own.stop_patience)
                   if own.stop == "auto" else None)
        runners.append(Runner(algorithm, moved, own.log_every, callback, control, stopper))
    members = [runner.algorithm for runner in runners]
    assert all(isinstance(member, NetworkAlgorithm) for member in members)
    ProblemGroup(members, execution, notice)  # type: ignore[arg-type]
    results: dict[int, Result | BaseException] = {}
    try:
        for runner in runners:
            runner.prepare()
        with SignalFlag() as flag:
            active = {index: runner.iterations(flag) for index, runner in enumerate(runners)}
            while active:
                for index in list(active):
                    try:
                        next(active[index])
                        continue
                    except StopIteration as end:
                        results[index] = end.value
                    except (Exception, Interrupted, OutOfTime) as error:
                        results[index] = error
                    del active[index]
                    runners[index].algorithm.close()  # leaves the group
    finally:
        for runner in runners:
            runner.algorithm.close()
    return [results[index] for index in range(count)]
