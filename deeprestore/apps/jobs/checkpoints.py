"""A job's checkpoint: the runner's state saved to ``NAME_METHOD.ckpt`` and read back to resume."""

from __future__ import annotations

import io
from typing import Any

import torch

from deeprestore.apps.jobs.job import Job, JobError
from deeprestore.io.writers import atomic_write_bytes

CHECKPOINT_FORMAT = 1


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("iterations", "log_every")}


def save_checkpoint(job: Job, state: dict[str, Any]) -> None:
    """Write the runner's ``state`` for ``job`` to :meth:`Job.checkpoint_path`, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "input": str(job.input), "method": job.method,
                "settings": job.settings.to_dict(), "runner": state}, buffer)
    atomic_write_bytes(job.checkpoint_path(), buffer.getvalue())


def load_checkpoint(job: Job) -> dict[str, Any]:
    """The runner state saved for ``job``; :class:`JobError` if it is unreadable or was made
    with other settings (only ``iterations`` and ``log_every`` may change; ``precision =
    "auto"`` matches the precision it chose then, which the state's ``precision`` says)."""
    path = job.checkpoint_path()
    try:
        saved = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise JobError(f"{path}: cannot read the checkpoint ({type(err).__name__}); delete it "
                       "to start over") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise JobError(f"{path}: not a deeprestore checkpoint")
    mine, theirs = _comparable(job.settings.to_dict()), _comparable(saved.get("settings", {}))
    if mine.get("precision") == "auto" and "precision" in theirs:
        mine["precision"] = theirs["precision"]  # continue in the arithmetic it started in
    if mine != theirs:
        keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise JobError(f"{path}: made with other settings ({', '.join(keys)}); delete it or "
                       "run without --resume")
    return {**saved["runner"], "precision": theirs.get("precision", "float32")}
