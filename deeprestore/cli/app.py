"""The Typer application, the usage error and the exceptions that end a command."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from deeprestore.solvers.control import Interrupted

app = typer.Typer(
    name="deeprestore",
    help="Image restoration with Deep Image Prior, DIP-TV and DeepRED (DIP + RED, via ADMM).",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMAND_LINE: list[str] = []  # the command line, for manifests



def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name`` from each Click found: older Typer raises the click
    package's, newer Typer its vendored ``typer._click`` (which may be there alongside)."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


EXIT_ERRORS: tuple[type[BaseException], ...] = (*_click_errors("Exit"), typer.Exit)
ABORT_ERRORS: tuple[type[BaseException], ...] = (*_click_errors("Abort"), typer.Abort)
CLICK_ERRORS = _click_errors("ClickException")


class UsageProblem(Exception):
    """A usage error found after parsing: exit code 2, one line."""


def check_output_folder(path: Path) -> None:
    """:class:`UsageProblem` when ``-o PATH`` names something that exists and is not a folder
    (the outputs go in a folder; found before any work, not as ``[Errno 17] File exists``)."""
    if path.exists() and not path.is_dir():
        raise UsageProblem(f"-o {path}: is a file, not a folder (-o names the folder the "
                           "outputs go in)")


def raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM outside a run (a job scheduler stopping us): unwind like Ctrl-C, exit 143.

    Inside a run the engine's own handler stops between two iterations and saves a checkpoint.
    """
    raise Interrupted(signum)
