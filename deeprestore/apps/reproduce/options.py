"""How ``reproduce`` runs a table: the choices of one request (:class:`ReproduceOptions`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReproduceOptions:
    """The choices of one ``reproduce`` request.

    ``methods`` / ``images``: subsets (names as in ``benchmarks.toml``; images by name, file or
    ``set/name``; None: all); ``quick``: centre crops and the ``-quick`` presets; ``device``
    (None: the CPU); ``runs``: runs averaged by the network methods; ``seed``: the image at
    position i of the table is degraded with seed + i, and every method runs with ``seed``;
    ``force``: redo finished work; ``skip_missing``: skip images not in the data directory
    (rows marked missing) instead of raising
    :class:`~deeprestore.apps.reproduce.MissingImageError`; ``command``: recorded in manifests
    and results.md; ``iterations``: overrides the iterative methods' (network methods and RED)
    iteration counts; ``budget_minutes``: stop inside this much wall time (on ``clock``, in
    seconds): each table first prints its plan (the estimated cost of every pair still to do,
    from one step timed per method and image size), then runs pairs in order until the time is
    spent; the pair running then saves a checkpoint and
    :class:`~deeprestore.apps.reproduce.BudgetSpent` is raised — the same call later continues
    where this one stopped; ``group``: step up to this many network problems of one size
    together (different images and methods, each with its own results as if run alone; 1 runs
    the pairs one by one); ``precision``: the network methods' arithmetic (None: the presets',
    float32, the paper's; ``bf16`` or ``auto`` to measure what bf16 changes).
    """

    methods: Sequence[str] | None = None
    images: Sequence[str] | None = None
    quick: bool = False
    device: torch.device | None = None
    runs: int | None = None
    seed: int = 0
    force: bool = False
    skip_missing: bool = False
    command: str = ""
    iterations: int | None = None
    budget_minutes: float | None = None
    group: int = 1
    precision: str | None = None
    clock: Callable[[], float] = time.monotonic

    @property
    def target(self) -> torch.device:
        """The device the jobs run on."""
        return self.device or torch.device("cpu")
