"""When f(x) is computed and from which x: the denoiser calls of DeepRED and RED, one path.

Algorithm 1 needs f(x) for its x-update; f is an off-the-shelf denoiser, never differentiated,
and by far the slowest step on a CPU. :class:`DenoiserSchedule` makes every call of it — for
the network methods and RED alike, for NLM, BM3D and any plugin — in one of three ways:

* ``sync``: every ``denoise_every`` iterations, f of the runs' current x, on all of torch's
  threads (the paper's Algorithm 1 with ``denoise_every = 1``);
* ``sync`` with ``denoiser_lag``: f of the x taken one period earlier (the authors' background
  thread made deterministic: the result is the one their thread would deliver);
* ``async``: in a background thread; a finished result is applied at the next iteration, a new
  call starts on refresh iterations; on a CPU the caller gives the call one of its threads while
  it runs (``Execution.share_cores``), since oversubscribed cores stall.

It also counts the calls and knows how old the f(x) in use is (the log's ``denoiser_age``).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import torch

from deeprestore.denoisers import Denoiser
from deeprestore.execution import Execution


class ScheduledRun(Protocol):
    """What the schedule reads and writes of one run: its x, the f(x) its x-update uses, and
    (lagged schedule) the x whose f comes next."""

    x: torch.Tensor
    denoised: torch.Tensor
    pending: torch.Tensor | None


class DenoiserSchedule:
    """The denoiser calls of one algorithm (module docstring).

    ``denoiser`` at noise std ``sigma`` (0–255 scale); ``every``: iterations between calls;
    ``mode``: ``sync`` or ``async``; ``lagged``: the lagged sync schedule; ``threads``: the
    caller's torch thread count (a sync call gets them all); ``share_cores``: on a CPU with
    several threads, the caller runs on one fewer while an async call is in flight.
    """

    def __init__(self, denoiser: Denoiser, sigma: float, *, every: int = 1, mode: str = "sync",
                 lagged: bool = False, threads: int | None = None,
                 device: torch.device | None = None,
                 execution: Execution | None = None) -> None:
        self.denoiser, self.sigma = denoiser, sigma
        self.every, self.lagged = every, lagged
        self.calls = 0
        #: iteration whose x the f(x) in use was made from (None: none made yet)
        self.snapshot_at: int | None = None
        #: the lagged (or async) snapshot's iteration: x₀, "taken" at round 1
        self.pending_at = 1
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.sharing = (execution is not None and execution.share_cores and device is not None
                        and device.type == "cpu" and self.threads > 1)
        self._worker = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="denoiser")
                        if mode == "async" else None)
        self._pending: Future[torch.Tensor] | None = None

    @property
    def background(self) -> bool:
        """Whether calls run in a background thread (``async``)."""
        return self._worker is not None

    def call(self, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """f(x) now, counted: x (N, C, H, W) in [0, 1]; ``threads``: the CPU threads of the
        call (default: all of the caller's)."""
        self.calls += 1
        return self.denoiser(x, self.sigma, threads=threads or self.threads)

    def advance(self, iteration: int, refresh: bool, runs: list[Any]) -> None:
        """Before iteration ``iteration``'s network steps: make or apply the f(x) of every run
        of ``runs`` (:class:`ScheduledRun`) that the schedule calls for; ``refresh``: whether
        this iteration starts a period."""
        if self._worker is not None:
            self._poll(iteration, refresh, runs)
        elif self.lagged:
            if iteration % self.every == 0:
                self._lagged(iteration, runs)
        elif refresh:
            self._sync(iteration, runs)

    def age(self, iteration: int) -> int | None:
        """Iterations since the x whose f(x) is in use (None before the first)."""
        return None if self.snapshot_at is None else iteration - self.snapshot_at

    def _sync(self, iteration: int, runs: list[Any]) -> None:
        """f of every run's current x, in one batched call on all of the threads."""
        denoised = self.call(torch.cat([run.x for run in runs]))
        for run, image in zip(runs, denoised.split(1), strict=True):
            run.denoised.copy_(image)  # in place: the run's f(x) keeps its storage
        self.snapshot_at = iteration

    def _lagged(self, iteration: int, runs: list[Any]) -> None:
        """f of the x snapshot taken one period ago becomes f(x); the current x is the next
        snapshot."""
        denoised = self.call(torch.cat([run.pending for run in runs]))
        for run, image in zip(runs, denoised.split(1), strict=True):
            run.denoised.copy_(image)
            run.pending.copy_(run.x)
        self.snapshot_at, self.pending_at = self.pending_at, iteration

    def _poll(self, iteration: int, refresh: bool, runs: list[Any]) -> None:
        """Apply a finished background result; start a new call on refresh iterations."""
        if self._pending is not None and self._pending.done():
            denoised = self._pending.result()
            for run, image in zip(runs, denoised.split(1), strict=True):
                run.denoised.copy_(image)
            self.snapshot_at = self.pending_at
            self._pending = None
            self._share_cores(False)
        if refresh and self._pending is None:
            assert self._worker is not None
            snapshot = torch.cat([run.x for run in runs]).clone()
            self._share_cores(True)
            threads = (self.threads - torch.get_num_threads()) if self.sharing else None
            self._pending = self._worker.submit(self._background_call, snapshot, threads)
            self.pending_at = iteration

    def _background_call(self, x: torch.Tensor, threads: int | None) -> torch.Tensor:
        self.calls += 1
        return self.denoiser(x, self.sigma, threads=threads)

    def _share_cores(self, in_flight: bool) -> None:
        """On the CPU, give one of the caller's torch threads to the call in flight."""
        if self.sharing:
            torch.set_num_threads(self.threads - 1 if in_flight else self.threads)

    def cancel(self) -> None:
        """Forget a call in flight (a resumed run starts a fresh one)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            self._share_cores(False)

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping a checkpoint keeps (a call in flight is not part of it)."""
        return {"denoiser_calls": self.calls, "snapshot_at": self.snapshot_at,
                "pending_at": self.pending_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cancel()
        self.calls = int(state["denoiser_calls"])
        self.snapshot_at = state["snapshot_at"]
        self.pending_at = int(state.get("pending_at", 1))

    def close(self) -> None:
        """Stop the background thread (waits for a call in flight)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
            self._pending = None
            self._share_cores(False)
