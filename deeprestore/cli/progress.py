"""What the commands show on stderr while they work: one-line messages, the progress bar of a
run (restore commands, demo) and the lines of ``reproduce``'s events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deeprestore.solvers.base import Progress as EngineProgress
from deeprestore.solvers.base import ProgressCallback

if TYPE_CHECKING:
    from deeprestore.apps.reproduce import ReproduceEvent

#: stderr, where progress, warnings and one-line errors go (stdout keeps results and JSON)
err_console = Console(stderr=True, highlight=False)


def tell(text: str) -> None:
    """Print ``text`` on stderr as it is (no markup), one logical line however wide."""
    err_console.print(text, soft_wrap=True, markup=False)


def progress_bar() -> Progress:
    """A transient bar: iterations done, loss, PSNR (dB), iterations per second, times."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("PSNR {task.fields[psnr]}"),
        TextColumn("{task.fields[speed]} it/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def add_run(bar: Progress, description: str, total: int) -> ProgressCallback:
    """Add a run's line to ``bar``; return the engine callback that moves it."""
    task_id: TaskID = bar.add_task(description, total=total, loss="-", psnr="-", speed="-")

    def update(event: EngineProgress) -> None:
        speed = event.iteration / event.seconds if event.seconds > 0 else 0.0
        bar.update(task_id, completed=event.iteration, total=event.total,
                   loss=f"{event.loss:.3g}",
                   psnr="-" if event.psnr is None else f"{event.psnr:.2f}",
                   speed=f"{speed:.1f}")

    return update


@contextmanager
def run_progress(description: str, total: int) -> Iterator[ProgressCallback]:
    """A transient bar with one run's line (``total`` iterations) while the block runs; yields
    the engine callback that moves it (the demo's
    :data:`~deeprestore.apps.demo.ProgressDisplay`)."""
    with progress_bar() as bar:
        yield add_run(bar, description, total)


class ReproducePrinter:
    """Prints ``reproduce``'s events on stderr, one line each, and keeps the pairs that failed.

    Missing images and failed pairs always; plans, notes and finished or skipped pairs unless
    ``quiet``; a table's heading only with ``headings`` (stderr a terminal, not quiet).
    """

    def __init__(self, *, quiet: bool, headings: bool) -> None:
        self.quiet, self.headings = quiet, headings
        #: "TABLE/IMAGE METHOD" of each pair that failed
        self.failed: list[str] = []

    def __call__(self, event: ReproduceEvent) -> None:
        """Print ``event`` (the ``progress`` callback of ``reproduce_table``)."""
        where = f"{event.table}/{event.image} {event.method}"
        if event.kind == "missing":
            tell(f"warning: {event.message}")
        elif event.kind == "failed":
            self.failed.append(where)
            tell(f"error: {where}: {event.message}")
        elif self.quiet:
            return
        elif event.kind == "plan":
            tell(f"plan: {where}: {event.message}")
        elif event.kind == "note" and event.image is not None:
            tell(f"{where}: {event.message}")
        elif event.kind in ("done", "skip"):
            tell(f"{where}: {_outcome(event)}")
        elif event.kind == "table" and self.headings:
            err_console.print(f"[bold]{event.table}[/bold] {event.message or ''}",
                              soft_wrap=True)


def _outcome(event: ReproduceEvent) -> str:
    """How a pair ended: skipped (done by an earlier call), its PSNR, or just done."""
    if event.kind == "skip":
        return "skipped (done before)"
    psnr = None if event.manifest is None else event.manifest.psnr
    return f"PSNR {psnr:.2f} dB" if psnr is not None else "done"

