"""Running one table: degrade its images, restore each with every method (one by one, or the
network pairs stepped in groups), then the grids and the results, rebuilt from disk."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deeprestore.apps.jobs import (
    Job,
    JobError,
    load_checkpoint,
    record_failure,
    run_job,
    run_jobs_together,
)
from deeprestore.apps.reproduce.benchmarks import INPUT_ROW, Benchmark, ImageEntry
from deeprestore.apps.reproduce.events import (
    BudgetSpent,
    MissingImageError,
    ProgressFn,
    ReproduceEvent,
)
from deeprestore.apps.reproduce.options import ReproduceOptions
from deeprestore.apps.reproduce.plan import report_plan
from deeprestore.apps.reproduce.prepare import normalised, prepare_image, task_options
from deeprestore.apps.reproduce.report import TableMeta, write_grid, write_results
from deeprestore.config.presets import Preset, load_preset
from deeprestore.config.resolve import SettingsResolver
from deeprestore.config.settings import Settings
from deeprestore.io.images import read_image
from deeprestore.io.manifest import Manifest, read_manifest
from deeprestore.methods import ITERATIVE_METHODS, NETWORK_METHODS
from deeprestore.solvers.base import ProgressCallback
from deeprestore.solvers.control import Interrupted, OutOfTime
from deeprestore.solvers.cost import CostError
from deeprestore.solvers.grouping import network_key
from deeprestore.tasks.options import TaskOptions

#: a network pair set aside to be stepped in a group: image, method, job, where it reports
Waiting = tuple[ImageEntry, str, Job, dict[str, Any]]


def _overrides(method: str, options: ReproduceOptions) -> dict[str, Any]:
    """The settings ``options`` imposes on ``method`` over its preset."""
    values: dict[str, Any] = {"seed": options.seed}
    if options.runs is not None and method in NETWORK_METHODS:
        values["runs"] = options.runs
    if options.precision is not None and method in NETWORK_METHODS:
        values["precision"] = options.precision
    if options.iterations is not None and method in ITERATIVE_METHODS:
        values["iterations"] = options.iterations
    return values


@dataclass
class TableRun:
    """One table to run into ``out / bench.name``: ``methods`` on ``entries`` of ``data``.

    With a ``deadline`` (on ``options.clock``): first the plan, then the pairs until it passes.
    With ``options.group`` > 1 each image's baselines run at once and its network pairs wait,
    to be stepped in groups of up to ``group`` problems of one size after every image's
    baselines.
    """

    bench: Benchmark
    data: Path
    out: Path
    methods: list[str]
    entries: list[ImageEntry]
    options: ReproduceOptions
    progress: ProgressFn | None = None
    deadline: float | None = None
    missing: list[ImageEntry] = field(init=False)
    preset: Preset = field(init=False)
    settings: dict[str, Settings] = field(init=False)
    meta: TableMeta = field(init=False)
    _prepared: dict[str, tuple[dict[str, Any], bool]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        data, options = self.data, self.options
        self.missing = [e for e in self.entries if not (data / e.set / e.file).is_file()]
        preset_name = self.bench.quick_preset if options.quick else self.bench.preset
        self.preset = load_preset(preset_name)
        self.settings = {}
        for method in self.job_methods:  # the preset's denoiser, in torch on CUDA (as auto)
            resolver = SettingsResolver(self.bench.task, method, _overrides(method, options),
                                        "auto", options.target)
            self.settings[method] = resolver.settings(preset_name)[1]
        warnings = [f"{e.relative} not found in {data}: skipped" for e in self.missing]
        self.meta = TableMeta(options.quick, self.preset.name, options.target, options.seed,
                              options.command, warnings,
                              {m: s.denoiser for m, s in self.settings.items()})

    @property
    def job_methods(self) -> list[str]:
        """The methods that run (every one but the input's own row)."""
        return [m for m in self.methods if m != INPUT_ROW]

    @property
    def present(self) -> list[ImageEntry]:
        """The entries whose image is in the data directory."""
        return [e for e in self.entries if e not in self.missing]

    @property
    def table_dir(self) -> Path:
        """``OUT/TABLE``."""
        return self.out / self.bench.name

    def report(self, event: ReproduceEvent) -> None:
        """Pass ``event`` to the caller's progress callback, if any."""
        if self.progress is not None:
            self.progress(event)

    def prepared(self, entry: ImageEntry) -> tuple[dict[str, Any], bool]:
        """``entry`` degraded into its folder (once per run): its record and whether it was
        (re)written."""
        if entry.name not in self._prepared:
            self._prepared[entry.name] = prepare_image(
                self.bench, entry, self.data, self.table_dir / entry.name,
                quick=self.options.quick, seed=self.options.seed, force=self.options.force)
        return self._prepared[entry.name]

    def make_job(self, image_dir: Path, method: str, options: TaskOptions) -> Job:
        """The job restoring ``image_dir/input.png`` with ``method``."""
        return Job(input=image_dir / "input.png", output_dir=image_dir, method=method,
                   settings=self.settings[method], task=options, preset=self.preset.name,
                   reference=image_dir / "clean.png", device=self.options.target,
                   overwrite=True, command=self.options.command,
                   auto_tile=False,  # tiles are not the protocol
                   deadline=self.deadline, clock=self.options.clock)

    def finished(self, done: Manifest | None, job: Job, fresh: bool) -> bool:
        """Whether ``done`` (the pair's manifest, if any) is this pair's result, still valid."""
        return (done is not None and not self.options.force and not fresh
                and done.parameters == normalised(job.settings.to_dict()))

    def run(self) -> Path:
        """Run the table; return ``OUT/TABLE/results.md``."""
        if self.missing and not self.options.skip_missing:
            more = f" (and {len(self.missing) - 1} more)" if len(self.missing) > 1 else ""
            raise MissingImageError(f"{self.missing[0].relative} not found in {self.data}{more}")
        for text in self.meta.warnings:
            self.report(ReproduceEvent("missing", self.bench.name, message=text))
        steps = len(self.present) * len(self.job_methods)
        self.report(ReproduceEvent("table", self.bench.name, steps=steps,
                                   message=self.bench.title))
        if self.deadline is not None:
            report_plan(self, self.deadline)
        waiting: list[Waiting] = []
        try:
            for number, entry in enumerate(self.present):
                self._run_image(entry, number * len(self.job_methods), steps, waiting)
            for batch in _groups(waiting, self.options.group):
                self._run_group(batch)
        except BaseException:
            with contextlib.suppress(Exception):
                self._write_results()
            raise
        return self._write_results()

    def _run_image(self, entry: ImageEntry, step: int, steps: int,
                   waiting: list[Waiting]) -> None:
        """Restore ``entry`` with every method (network pairs into ``waiting`` when grouped),
        then its grid and the results so far."""
        image_dir = self.table_dir / entry.name
        record, fresh = self.prepared(entry)
        options = task_options(self.bench, record, image_dir)
        for method in self.job_methods:
            step += 1
            job = self.make_job(image_dir, method, options)
            where = dict(table=self.bench.name, image=entry.name, method=method, step=step,
                         steps=steps)
            done = read_manifest(job.outputs()["json"])
            if self.finished(done, job, fresh):
                self.report(ReproduceEvent("skip", **where, manifest=done))
                continue
            if done is not None and not self.options.force and not fresh:
                self.report(ReproduceEvent("note", **where, message="settings changed: redone"))
            job = self._resumed_if_possible(job, self.options.force or fresh, where)
            if self.options.group > 1 and method in NETWORK_METHODS:
                waiting.append((entry, method, job, where))
                continue
            self._budget_check(entry, method)
            self.report(ReproduceEvent("start", **where))
            try:
                result: Manifest | BaseException = run_job(job, callback=self._forwarder(where))
            except (Interrupted, OutOfTime, FloatingPointError, JobError, CostError) as err:
                result = err
            self._outcome(entry, method, job, where, result)
        write_grid(self.bench, image_dir, self.methods)
        self._write_results()

    def _run_group(self, batch: list[Waiting]) -> None:
        """Step ``batch`` (network pairs of one shape) together; report every pair's outcome
        before raising what ends the table."""
        self._budget_check(batch[0][0], batch[0][1])
        for _, _, _, where in batch:
            self.report(ReproduceEvent("start", **where,
                                       message=f"grouped: {len(batch)} problems per step"))

        def group_notice(text: str, where: dict[str, Any] = batch[0][3]) -> None:
            self.report(ReproduceEvent("note", **where, message=text))

        results = run_jobs_together([job for _, _, job, _ in batch],
                                    [self._forwarder(where) for _, _, _, where in batch],
                                    notice=group_notice)
        stopping: BaseException | None = None
        for (entry, method, job, where), result in zip(batch, results, strict=True):
            try:
                self._outcome(entry, method, job, where, result)
            except BaseException as stop:  # report every pair before stopping
                stopping = stopping or stop
        for entry in dict.fromkeys(entry for entry, _, _, _ in batch):
            write_grid(self.bench, self.table_dir / entry.name, self.methods)
        self._write_results()
        if stopping is not None:
            raise stopping

    def _write_results(self) -> Path:
        return write_results(self.bench, self.table_dir, self.methods, self.entries,
                             self.missing, self.meta)

    def _budget_check(self, entry: ImageEntry, method: str) -> None:
        if self.deadline is not None and self.options.clock() >= self.deadline:
            raise BudgetSpent(f"the budget is spent before {self.bench.name}/{entry.name} "
                              f"{method}: rerun the same command to continue")

    def _forwarder(self, where: dict[str, Any]) -> ProgressCallback | None:
        if self.progress is None:
            return None
        return lambda event: self.report(ReproduceEvent("iteration", **where, engine=event))

    def _outcome(self, entry: ImageEntry, method: str, job: Job, where: dict[str, Any],
                 result: Manifest | BaseException) -> None:
        """Report one pair's manifest, or record its failure; raise what ends the table."""
        if isinstance(result, Interrupted):
            result.hint = "rerun the same command to continue"
            raise result
        if isinstance(result, OutOfTime):
            saved = "" if result.checkpoint is None else f", its state saved in {result.checkpoint}"
            raise BudgetSpent(f"the budget is spent during {self.bench.name}/{entry.name} "
                              f"{method}{saved}: rerun the same command to continue") from None
        if isinstance(result, (FloatingPointError, JobError, CostError)):
            # this pair fails (or does not fit), the table goes on
            record_failure(job.output_dir, job.input, method, str(result))
            self.report(ReproduceEvent("failed", **where, message=str(result)))
            return
        if isinstance(result, BaseException):
            raise result
        self.report(ReproduceEvent("done", **where, manifest=result))

    def _resumed_if_possible(self, job: Job, start_over: bool, where: dict[str, Any]) -> Job:
        """``job`` resuming the checkpoint an interrupted run of the same pair left, when there
        is one made with the same settings (and neither ``--force`` nor a new input asks to
        start over); otherwise ``job`` itself, from iteration 0."""
        if start_over or not job.checkpoint_path().exists():
            return job
        try:
            load_checkpoint(job)
        except JobError as err:
            self.report(ReproduceEvent("note", **where, message=f"{err}: started over"))
            return job
        self.report(ReproduceEvent("note", **where, message="resumed from its checkpoint"))
        return replace(job, resume=True)


def _groups(waiting: list[Waiting], size: int) -> list[list[Waiting]]:
    """The waiting network pairs in groups of up to ``size`` whose networks share a shape: the
    same input size and the same network settings (in table order within each group)."""
    by_key: dict[tuple[Any, ...], list[Waiting]] = {}
    for item in waiting:
        job = item[2]
        observed = read_image(job.input)
        key = network_key(job.settings, observed.channels, (observed.height, observed.width))
        by_key.setdefault(key, []).append(item)
    return [items[start:start + size] for items in by_key.values()
            for start in range(0, len(items), size)]
