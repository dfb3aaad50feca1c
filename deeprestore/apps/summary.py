"""``deeprestore summary OUT/``: one table of a finished batch, from the manifests it left.

Every successful restore leaves ``NAME_METHOD.json`` (its manifest) and every failed one
``NAME_METHOD.failed.json``; this module gathers both kinds under a folder (at any depth) into
rows of ``input, method, status, psnr, seconds, output, error``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from deeprestore.io.manifest import Manifest, read_json_object
from deeprestore.io.writers import atomic_write_bytes

SUMMARY_COLUMNS = ("input", "method", "status", "psnr", "seconds", "output", "error")


def _row(data: dict[str, Any]) -> dict[str, Any] | None:
    if data.get("status") == "failed" and {"input", "method"} <= set(data):
        return {"input": data["input"], "method": data["method"], "status": "failed",
                "psnr": None, "seconds": None, "output": None, "error": data.get("error", "")}
    manifest = Manifest.from_dict(data)
    if manifest is None:
        return None
    return {"input": manifest.input, "method": manifest.method, "status": "done",
            "psnr": manifest.psnr, "seconds": manifest.seconds, "output": manifest.output,
            "error": None}


def collect_summary(folder: Path) -> list[dict[str, Any]]:
    """The rows of every manifest and failure record under ``folder``, sorted by input, method.

    JSON files that are not deeprestore manifests (or do not parse) are ignored. When one
    (input, method) has both a manifest and a failure record, the manifest wins.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.json")):
        data = read_json_object(path)
        row = None if data is None else _row(data)
        if row is None:
            continue
        key = (row["input"], row["method"])
        if key not in rows or rows[key]["status"] == "failed":
            rows[key] = row
    return [rows[key] for key in sorted(rows)]


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """The CSV text of :func:`collect_summary`'s rows (columns :data:`SUMMARY_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in SUMMARY_COLUMNS})
    return buffer.getvalue()


def write_summary(folder: Path, output: Path | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Collect the rows under ``folder`` and write them to ``output`` (default
    ``folder/summary.csv``) atomically; returns the rows and the CSV's path."""
    rows = collect_summary(folder)
    target = output if output is not None else folder / "summary.csv"
    atomic_write_bytes(target, summary_csv(rows).encode("utf-8"))
    return rows, target
