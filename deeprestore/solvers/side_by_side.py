"""The runs of a network method stepped side by side on a CPU (``Execution.side_by_side``).

The runs are dealt round-robin to ``min(runs, threads)`` single-thread executors, each given its
share of torch's threads once; an iteration submits every share's Θ-steps and waits for all of
them, so the steps of one run stay in order and every run's arithmetic is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Generic, TypeVar

import torch

from deeprestore.execution import own_thread_count

RunT = TypeVar("RunT")
StepT = TypeVar("StepT")


class RunWorkers(Generic[RunT]):
    """One single-thread executor per share of ``runs``, its torch thread count set once
    (``threads`` shared out among them; the process default is put back to ``threads``)."""

    def __init__(self, runs: Sequence[RunT], threads: int) -> None:
        count = min(len(runs), threads)
        self.runs = list(runs)
        self.shares = [self.runs[w::count] for w in range(count)]
        counts = [threads // count + (w < threads % count) for w in range(count)]
        self.workers = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"run{w}")
                        for w in range(count)]
        for future in [worker.submit(own_thread_count, share)
                       for worker, share in zip(self.workers, counts, strict=True)]:
            future.result()
        torch.set_num_threads(threads)  # the default for threads created later

    def steps(self, step: Callable[[RunT], StepT]) -> list[StepT]:
        """``step`` of every run on the workers, returned in run order (after all of them ended,
        so that no worker still runs when one has failed)."""

        def one_share(share: list[RunT]) -> list[StepT]:
            return [step(run) for run in share]

        futures = [worker.submit(one_share, share)
                   for worker, share in zip(self.workers, self.shares, strict=True)]
        wait(futures)
        steps: dict[int, StepT] = {}
        for share, future in zip(self.shares, futures, strict=True):
            for run, done in zip(share, future.result(), strict=True):
                steps[id(run)] = done
        return [steps[id(run)] for run in self.runs]

    def close(self) -> None:
        """Stop the workers (each finishes what it runs)."""
        for worker in self.workers:
            worker.shutdown(wait=True)
        self.workers = []
