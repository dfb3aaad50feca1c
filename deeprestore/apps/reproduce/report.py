"""A table's report, rebuilt from the files on disk: ``results.csv`` (one row per image and
method), ``results.md`` (averages and per-image numbers next to the paper's) and each image's
``grid.png`` (input, every output, the reference)."""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeprestore import __version__
from deeprestore.apps.reproduce.benchmarks import INPUT_ROW, Benchmark, ImageEntry
from deeprestore.io.images import read_image
from deeprestore.io.manifest import Manifest, read_json_object, read_manifest
from deeprestore.io.plots import compare_image
from deeprestore.io.writers import atomic_write_bytes
from deeprestore.tasks.registry import SUPERRES

CSV_FIELDS = ("image", "method", "psnr", "ssim", "seconds", "iterations", "device", "set",
              "status", "paper_psnr")
_PROTOCOL_TEXT = {
    "rgb": "RGB, data range 1, no border crop",
    "y": "8-bit Y channel (both images quantised to 8 bits), peak 255, no border crop",
}


@dataclass(frozen=True)
class TableMeta:
    """What results.md says of how the table was run: quick crops or not, the preset, the
    device, the seed, the command, warnings (missing images), each method's denoiser."""

    quick: bool
    preset: str
    device: torch.device
    seed: int
    command: str
    warnings: list[str] = field(default_factory=list)
    denoisers: dict[str, str | None] = field(default_factory=dict)


def _method_manifest(image_dir: Path, method: str) -> Manifest | None:
    return read_manifest(image_dir / f"input_{method}.json")


def write_grid(bench: Benchmark, image_dir: Path, methods: list[str]) -> Path | None:
    """``grid.png``: the input, every finished method's output and the reference."""
    record = read_json_object(image_dir / "input.json")
    if record is None:
        return None
    degraded = read_image(image_dir / "input.png").pixels
    clean = read_image(image_dir / "clean.png").pixels
    if bench.task == SUPERRES.name:
        factor = int(record["degradation"]["factor"])
        title = f"low-res input (x{factor})"
        degraded = degraded.repeat(factor, axis=0).repeat(factor, axis=1)
    else:
        title = f"{bench.label(INPUT_ROW)}\n{record['psnr']:.2f} dB"
    panels: list[tuple[str, np.ndarray]] = [(title, degraded)]
    for method in methods:
        manifest = _method_manifest(image_dir, method)
        output = image_dir / f"input_{method}.png"
        if method == INPUT_ROW or manifest is None or not output.exists():
            continue
        psnr = manifest.psnr
        value = "" if psnr is None else f"\n{psnr:.2f} dB"
        denoiser = (manifest.parameters or {}).get("denoiser")
        panels.append((f"{bench.label(method, denoiser)}{value}", read_image(output).pixels))
    panels.append(("reference", clean))
    return compare_image(panels, image_dir / "grid.png")


def _rows(bench: Benchmark, table_dir: Path, methods: list[str], entries: list[ImageEntry],
          missing: list[ImageEntry]) -> list[dict[str, Any]]:
    """One row per (image, method), read from the files on disk."""
    rows = []
    for entry in entries:
        image_dir = table_dir / entry.name
        record = read_json_object(image_dir / "input.json")
        for method in methods:
            row: dict[str, Any] = {key: None for key in CSV_FIELDS}
            row.update(image=entry.name, method=method, set=entry.set,
                       paper_psnr=bench.paper_value(entry.set, method, entry.name))
            if entry in missing:
                row["status"] = "missing"
            elif method == INPUT_ROW:
                row["status"] = "not run" if record is None else "ok"
                if record is not None:
                    row.update(psnr=record.get("psnr"), ssim=record.get("ssim"))
            else:
                manifest = _method_manifest(image_dir, method)
                row["status"] = "not run" if manifest is None else "ok"
                if manifest is not None:
                    row.update(psnr=manifest.psnr, ssim=manifest.ssim, seconds=manifest.seconds,
                               iterations=manifest.iterations, device=manifest.device)
            rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        cells = []
        for key in CSV_FIELDS:
            value = row[key]
            if value is None:
                cells.append("")
            elif key in ("psnr", "ssim"):
                cells.append(f"{value:.4f}")
            else:
                cells.append(str(value))
        writer.writerow(cells)
    return buffer.getvalue()


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _difference(ours: float | None, paper: float | None) -> str:
    return "–" if ours is None or paper is None else f"{ours - paper:+.2f}"


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``rows``; None when a row lacks it or there is no row."""
    if not rows or any(r[key] is None for r in rows):
        return None
    return float(np.mean([r[key] for r in rows]))


def _device_text(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, "\
           f"torch threads: {torch.get_num_threads()})"


def _markdown(bench: Benchmark, rows: list[dict[str, Any]], methods: list[str],
              entries: list[ImageEntry], meta: TableMeta) -> str:
    """results.md: how the table was run, the averages per set, the per-image PSNRs, notes."""
    lines = _header(bench, rows, meta)
    by_key = {(r["image"], r["method"]): r for r in rows}
    for set_name in bench.sets:
        in_set = [e for e in entries if e.set == set_name]
        if in_set:
            lines += _set_averages(bench, set_name, in_set, by_key, methods, meta)
    lines += _per_image(bench, entries, by_key, methods, meta)
    lines += ["## Notes", ""] + [f"- {note}" for note in bench.notes]
    lines += ["- Pictures: `IMAGE/grid.png` (input, every output, reference); logs and manifests: "
              "`IMAGE/input_METHOD.csv`, `.json`.", ""]
    if meta.warnings:
        lines += ["## Warnings", ""] + [f"- {text}" for text in meta.warnings] + [""]
    return "\n".join(lines)


def _label(bench: Benchmark, method: str, meta: TableMeta) -> str:
    return bench.label(method, meta.denoisers.get(method))


def _header(bench: Benchmark, rows: list[dict[str, Any]], meta: TableMeta) -> list[str]:
    """The title, the quick-run warning and the table of how it was run."""
    preset = meta.preset
    lines = [f"# {bench.name}: {bench.title}", ""]
    if meta.quick:
        side = bench.crop
        lines += [
            f"**Quick run: these numbers are NOT comparable to the paper.** They come from "
            f"centre crops of at most {side}×{side} px restored with the short `{preset}` preset "
            f"(the paper restores whole images with `{bench.preset}`). They show that the "
            "pipeline works, not how well the methods do.", ""]
    devices = sorted({str(r["device"]) for r in rows if r["device"]})
    degradation = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in bench.degradation.items())
    stored = ("the 8-bit low-resolution image (PIL's Lanczos downscale quantises to 8 bits, as "
              "the DIP code does)" if bench.task == SUPERRES.name else
              "an 8-bit PNG: the paper kept the degraded input in float, the restorations here "
              "read the quantised file (about 0.01 dB at sigma = 25)")
    return lines + [
        "| | |", "|---|---|",
        f"| command | `{meta.command or '(API call)'}` |",
        f"| date | {datetime.now(timezone.utc).isoformat(timespec='seconds')} |",
        f"| device | {_device_text(meta.device)}; in the manifests: "
        f"{', '.join(devices) or '–'} |",
        f"| versions | deeprestore {__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()} |",
        f"| preset | `{preset}` |",
        f"| PSNR | {_PROTOCOL_TEXT[bench.psnr]} |",
        f"| degradation | {bench.task}: {degradation}; the image at position i of the table is "
        f"degraded with seed {meta.seed} + i, methods run with seed {meta.seed} |",
        f"| input | {stored} |",
        "",
    ]


def _set_averages(bench: Benchmark, set_name: str, in_set: list[ImageEntry],
                  by_key: dict[tuple[str, str], dict[str, Any]], methods: list[str],
                  meta: TableMeta) -> list[str]:
    """One set's table of average PSNR, SSIM, time and iterations per method, with the
    paper's average beside ours."""
    total = len(bench.sets[set_name])
    lines = [f"## {set_name}: average PSNR (dB)", "",
             "| method | ours | paper | ours − paper | SSIM | s / image | iterations "
             "| images |", "|---|---|---|---|---|---|---|---|"]
    partial = False
    for method in methods:
        done = [by_key[(e.name, method)] for e in in_set
                if by_key[(e.name, method)]["psnr"] is not None]
        psnr = _mean(done, "psnr")
        paper = bench.paper_value(set_name, method)
        difference = _difference(psnr, paper)
        if done and len(done) < total and difference != "–":
            difference += " *"
            partial = True
        iters = sorted({r["iterations"] for r in done if r["iterations"] is not None})
        lines.append(
            f"| {_label(bench, method, meta)} | {_number(psnr)} | {_number(paper)} "
            f"| {difference} | {_number(_mean(done, 'ssim'), 3)} "
            f"| {_number(_mean(done, 'seconds'), 1)} "
            f"| {', '.join(map(str, iters)) or '–'} | {len(done)}/{total} |")
    if partial:
        lines += ["", "\\* averaged over fewer images than the paper's set: not the paper's "
                  "average."]
    lines.append("")
    return lines


def _per_image(bench: Benchmark, entries: list[ImageEntry],
               by_key: dict[tuple[str, str], dict[str, Any]], methods: list[str],
               meta: TableMeta) -> list[str]:
    """Every image's PSNR per method, the paper's beside it where the paper gives one."""
    lines = ["## Per image: PSNR (dB)", "",
             "| image | " + " | ".join(_label(bench, m, meta) for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for entry in entries:
        cells = []
        for method in methods:
            row = by_key[(entry.name, method)]
            if row["status"] == "missing":
                cells.append("missing")
                continue
            text = _number(row["psnr"])
            if row["paper_psnr"] is not None:
                text += (f" (paper {row['paper_psnr']:.2f}, "
                         f"{_difference(row['psnr'], row['paper_psnr'])})")
            cells.append(text)
        lines.append(f"| {entry.relative} | " + " | ".join(cells) + " |")
    return lines + ["", "`–`: not run yet (rerun the same command to continue) or no paper "
                    "number.", ""]


def write_results(bench: Benchmark, table_dir: Path, methods: list[str],
                   entries: list[ImageEntry], missing: list[ImageEntry],
                   meta: TableMeta) -> Path:
    """Write ``results.csv`` and ``results.md`` from the files on disk; return results.md."""
    rows = _rows(bench, table_dir, methods, entries, missing)
    atomic_write_bytes(table_dir / "results.csv", _csv_text(rows).encode("utf-8"))
    path = table_dir / "results.md"
    atomic_write_bytes(path, _markdown(bench, rows, methods, entries, meta).encode("utf-8"))
    return path
