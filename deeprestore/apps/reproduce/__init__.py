"""``deeprestore reproduce``: the DeepRED paper's tables with one command, plus pictures.

The tables, their images, protocols and the paper's numbers are in ``benchmarks.toml`` (next to
this file). For each image of a table, :func:`reproduce_table` degrades the clean image in memory
as the paper did (fixed seed per image), restores it with every method of the table through
:class:`~deeprestore.apps.jobs.Job`, and writes::

    OUT/TABLE/results.csv        one row per (image, method): psnr, ssim, seconds, ...
    OUT/TABLE/results.md         averages and per-image numbers next to the paper's
    OUT/TABLE/IMAGE/clean.png    the reference (superres: the HR crop, a multiple of the factor)
    OUT/TABLE/IMAGE/input.png    the degraded input (8-bit PNG; superres: the LR image)
    OUT/TABLE/IMAGE/mask.png     inpainting only: 255 = known pixel
    OUT/TABLE/IMAGE/input.json   the degradation record and the input's own PSNR/SSIM
    OUT/TABLE/IMAGE/input_METHOD.{png,csv,json}   each method's output, log and manifest
    OUT/TABLE/IMAGE/grid.png     input, every method's output and the reference, PSNR in titles
    OUT/results.md               with TABLE = "all": every table's results.md in turn

Resuming: an (image, method) whose manifest exists and was made with the same settings and the
same degraded input is skipped unless ``force``; results are rebuilt from the files on disk.

Modules: :mod:`.benchmarks` (the tables), :mod:`.prepare` (degrading the images),
:mod:`.table` (running a table), :mod:`.plan` (a budget's plan), :mod:`.report` (results and
grids), :mod:`.events` / :mod:`.options` (what the caller gets and gives).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from deeprestore.apps.reproduce.benchmarks import (
    ALL,
    TABLES,
    Benchmark,
    ImageEntry,
    load_benchmarks,
    matches,
    select_images,
    select_methods,
)
from deeprestore.apps.reproduce.events import (
    BudgetSpent,
    MissingImageError,
    ProgressFn,
    ReproduceError,
    ReproduceEvent,
)
from deeprestore.apps.reproduce.options import ReproduceOptions
from deeprestore.apps.reproduce.table import TableRun
from deeprestore.io.writers import atomic_write_bytes

__all__ = ["ALL", "TABLES", "Benchmark", "BudgetSpent", "ImageEntry", "MissingImageError",
           "ReproduceError", "ReproduceEvent", "ReproduceOptions", "load_benchmarks",
           "reproduce_table"]


def reproduce_table(table: str, data: Path, out: Path, options: ReproduceOptions | None = None,
                    progress: ProgressFn | None = None) -> Path:
    """Reproduce one table of the paper (or ``"all"``) into ``out``; return its results.md.

    ``data``: the data directory (``cbm3d9/``, ``set5/``, ``set14/``, ``ncsr4/``);
    ``options``: subsets, quick crops, device, seeds, budget, grouping
    (:class:`ReproduceOptions`; None: every method and image, full protocol, on the CPU);
    ``progress``: called with every :class:`ReproduceEvent`. Raises :class:`ReproduceError`
    for an unknown table, method or image, :class:`MissingImageError` for an image missing
    from ``data``, :class:`BudgetSpent` when ``options.budget_minutes`` runs out.
    """
    options = options or ReproduceOptions()
    tables = load_benchmarks()
    if not data.is_dir():
        raise ReproduceError(f"data directory {data} not found")
    deadline = (None if options.budget_minutes is None
                else options.clock() + 60 * options.budget_minutes)
    if options.group < 1:
        options = replace(options, group=1)
    if table != ALL:
        if table not in tables:
            raise ReproduceError(f"unknown table {table!r} (known: {', '.join(TABLES)}, all)")
        bench = tables[table]
        return TableRun(bench, data, out, select_methods(bench, options.methods),
                        select_images(bench, options.images), options, progress,
                        deadline).run()
    return _reproduce_all(tables, data, out, options, progress, deadline)


def _reproduce_all(tables: dict[str, Benchmark], data: Path, out: Path,
                   options: ReproduceOptions, progress: ProgressFn | None,
                   deadline: float | None) -> Path:
    """Every table in turn (the chosen methods and images of each), then ``OUT/results.md``
    gathering their results."""
    methods, images = options.methods, options.images
    for method in methods or ():
        if not any(method in b.methods for b in tables.values()):
            raise ReproduceError(f"method {method!r} is in no table")
    for wanted in images or ():
        if not any(matches(e, wanted) for b in tables.values() for e in b.images()):
            raise ReproduceError(f"image {wanted!r} is in no table")
    written: list[Path] = []
    for bench in tables.values():
        chosen = [m for m in bench.methods if not methods or m in methods]
        entries = [e for e in bench.images() if not images or any(matches(e, w) for w in images)]
        if not chosen or not entries:
            if progress is not None:
                progress(ReproduceEvent("note", bench.name, message="no method or image chosen"))
            continue
        written.append(TableRun(bench, data, out, chosen, entries, options, progress,
                                deadline).run())
    summary = out / "results.md"
    parts = [path.read_text(encoding="utf-8").replace("\n#", "\n##") for path in written]
    header = "# deeprestore reproduce all\n\n" + "".join(
        f"- [{p.parent.name}]({p.parent.name}/results.md)\n" for p in written)
    atomic_write_bytes(summary, "\n".join([header, *("#" + p for p in parts)]).encode("utf-8"))
    return summary
