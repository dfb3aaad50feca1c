"""Writing a run's outputs: restored image, CSV log, JSON manifest — never half-written.

Every file is written to a temporary file in its target directory and renamed into place
(``os.replace`` is atomic on one file system), so an interrupted run leaves either the old file
or the new one, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deeprestore.arrays import Image
from deeprestore.io.images import encode_image
from deeprestore.solvers.base import LogRow

CSV_COLUMNS = ("iteration", "loss", "psnr", "gap", "seconds", "denoiser_age", "lam", "mu",
               "stop_signal")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: Path, image: Image) -> None:
    """Save ``image`` in the format of ``path``'s suffix, atomically."""
    atomic_write_bytes(path, encode_image(image, path.suffix))


def log_csv(rows: Iterable[LogRow], tiles: list[int] | None = None) -> str:
    """The CSV text of a run's log (columns :data:`CSV_COLUMNS`; empty cells where unknown).
    A tiled run's rows come tile after tile, with a leading ``tile`` column (``tiles``: the
    tile index of each row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS if tiles is None else ("tile", *CSV_COLUMNS))
    for number, row in enumerate(rows):
        writer.writerow(
            ([] if tiles is None else [tiles[number]]) + [
                row.iteration,
                f"{row.loss:.8g}",
                "" if row.psnr is None else f"{row.psnr:.4f}",
                "" if row.gap is None else f"{row.gap:.6g}",
                f"{row.seconds:.3f}",
                "" if row.denoiser_age is None else row.denoiser_age,
                "" if row.lam is None else f"{row.lam:.6g}",
                "" if row.mu is None else f"{row.mu:.6g}",
                "" if row.stop_signal is None else f"{row.stop_signal:.6g}",
            ]
        )
    return buffer.getvalue()


def write_csv(path: Path, rows: Iterable[LogRow], tiles: list[int] | None = None) -> None:
    """Write the log CSV atomically (``tiles``: see :func:`log_csv`)."""
    atomic_write_bytes(path, log_csv(rows, tiles).encode("utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON document (the manifest) atomically, pretty-printed."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))
