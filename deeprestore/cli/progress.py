"""The progress bar of a run on stderr, shared by the restore commands and the demo."""

from __future__ import annotations

from collections.abc import Callable

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

#: stderr, where progress, warnings and one-line errors go (stdout keeps results and JSON)
err_console = Console(stderr=True, highlight=False)


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


def add_run(bar: Progress, description: str, total: int) -> Callable[[EngineProgress], None]:
    """Add a run's line to ``bar``; return the engine callback that moves it."""
    task_id: TaskID = bar.add_task(description, total=total, loss="-", psnr="-", speed="-")

    def update(event: EngineProgress) -> None:
        speed = event.iteration / event.seconds if event.seconds > 0 else 0.0
        bar.update(task_id, completed=event.iteration, total=event.total,
                   loss=f"{event.loss:.3g}",
                   psnr="-" if event.psnr is None else f"{event.psnr:.2f}",
                   speed=f"{speed:.1f}")

    return update
