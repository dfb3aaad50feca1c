"""The console entry point: one line per error, exit codes 0/1/2, 130 / 143 on a signal."""

from __future__ import annotations

import signal
import sys
import threading

import typer

from deeprestore.apps.jobs import JobError
from deeprestore.arrays import ImageError
from deeprestore.cli import restore, tools  # noqa: F401  (they register the commands)
from deeprestore.cli.app import (
    ABORT_ERRORS,
    CLICK_ERRORS,
    COMMAND_LINE,
    EXIT_ERRORS,
    UsageProblem,
    app,
    raise_terminated,
)
from deeprestore.cli.progress import err_console
from deeprestore.config.presets import PresetError
from deeprestore.config.settings import SettingsError
from deeprestore.huge_pages import request_huge_pages
from deeprestore.solvers.control import Interrupted
from deeprestore.tasks.registry import TaskError


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, exit codes 0/1/2, 130 on Ctrl-C, 143 on
    SIGTERM (outputs of the image in progress are not written; finished images are kept)."""
    request_huge_pages()  # before torch's first CPU allocation (deeprestore.huge_pages)
    args = list(sys.argv[1:] if argv is None else argv)
    COMMAND_LINE[:] = args
    debug = "--debug" in args
    command = typer.main.get_command(app)
    if threading.current_thread() is threading.main_thread():
        # Set here, right before the try, so that no signal falls between the entry point's
        # loading handlers (deeprestore.__main__) and the handling below.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        code = command.main(args=args, prog_name="deeprestore", standalone_mode=False)
        if code == 130:  # newer Click turns Ctrl-C into a return value of 130 by itself
            err_console.print("deeprestore: interrupted", soft_wrap=True)
    except EXIT_ERRORS as stop:
        code = getattr(stop, "exit_code", 0)
    except CLICK_ERRORS as err:
        if type(err).__name__ == "NoArgsIsHelpError" and getattr(err, "ctx", None) is not None:
            print(err.ctx.get_help())  # type: ignore[attr-defined]
            code = 0
        else:
            message = " ".join(err.format_message().split())
            err_console.print(f"deeprestore: error: {message}", soft_wrap=True, markup=False)
            code = 2
    except ABORT_ERRORS:
        err_console.print("deeprestore: interrupted", soft_wrap=True)
        code = 130
    except KeyboardInterrupt:
        err_console.print("deeprestore: interrupted", soft_wrap=True)
        code = 130
    except Interrupted as stop:
        word = "terminated" if stop.signum == signal.SIGTERM else "interrupted"
        where = (f"; checkpoint saved to {stop.checkpoint} ({stop.hint})"
                 if stop.checkpoint is not None else "")
        err_console.print(f"deeprestore: {word}{where}", soft_wrap=True, markup=False)
        code = 128 + stop.signum
    except (UsageProblem, PresetError, SettingsError, ImageError, TaskError, JobError) as err:
        if debug:
            raise
        err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
        code = 2
    except OSError as err:
        if debug:
            raise
        err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
