"""The inputs of a batch command (the restore commands, ``degrade``) that failed: each one's
one-line error on stderr, and the exit code of the batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deeprestore.cli.progress import tell
from deeprestore.tasks.registry import TaskError

#: What ends one input of a batch but not the batch: the project's errors (ImageError,
#: TaskError, JobError, CostError, ... are ValueErrors), a run that diverged
#: (FloatingPointError) and a file or disk problem (OSError).
INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, FloatingPointError, OSError)


@dataclass
class BatchFailures:
    """Counts the inputs that failed: ``usage`` did not fit the task options (a
    :class:`~deeprestore.tasks.registry.TaskError`: wrong-size mask, kernel larger than the
    image, ...), ``other`` failed otherwise."""

    usage: int = 0
    other: int = 0

    def report(self, path: Path, err: Exception) -> str:
        """Count ``err`` (one of :data:`INPUT_ERRORS`) raised for input ``path``, print its
        one-line error and return the message (what a failure record holds)."""
        if isinstance(err, TaskError):
            self.usage += 1
            message = f"{path}: {err}"
        else:
            self.other += 1
            message = str(err)
        tell(f"deeprestore: error: {message}")
        return message

    @property
    def exit_code(self) -> int:
        """2 when an input did not fit the task options, else 1 when one failed, else 0."""
        return 2 if self.usage else (1 if self.other else 0)
