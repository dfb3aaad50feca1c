"""Pictures of runs: convergence plots (matplotlib, optional) and labelled image panels (PIL).

- :func:`plot_runs`: loss (log scale) and PSNR against iteration, one line per run log CSV
  (the engine's CSV: ``iteration,loss,psnr,gap,seconds,denoiser_age,lam,mu``). Needs
  matplotlib, the optional extra ``plot``; without it :class:`PlotUnavailable` says how to
  install it.
- :func:`compare_image`: images side by side, each with a title above it — ``compare.png``
  files and the grids of ``deeprestore reproduce``. Pillow only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deeprestore.io.writers import atomic_write_bytes

INSTALL_HINT = 'pip install "deeprestore[plot]"'
#: Small panels are enlarged (nearest neighbour, integer factor) to at least this width in px.
MIN_PANEL_WIDTH = 128
_MARKERS_UP_TO = 30  # logs with at most this many rows get a marker per row
_GAP = 6  # px between panels and around the grid
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the message says how to install it)."""


class PlotError(ValueError):
    """A run log that cannot be plotted (one-line message naming the file)."""


def read_run_csv(path: Path) -> dict[str, list[float | None]]:
    """The columns ``iteration``, ``loss`` and ``psnr`` of a run log (empty cells → None)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PlotError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PlotError(f"{path}: cannot read it as a CSV run log ({err})") from None
    if not rows or "iteration" not in rows[0] or "loss" not in rows[0]:
        raise PlotError(f"{path}: not a run log (needs the columns iteration and loss)")
    columns: dict[str, list[float | None]] = {"iteration": [], "loss": [], "psnr": []}
    for number, row in enumerate(rows, start=2):
        for key in columns:
            text = (row.get(key) or "").strip()
            try:
                columns[key].append(float(text) if text else None)
            except ValueError:
                raise PlotError(f"{path}: line {number}: {key} is not a number: {text!r}") from None
    return columns


def plot_runs(csv_paths: Sequence[Path], output: Path) -> Path:
    """Plot loss (log scale) and PSNR (dB) against iteration, one line per CSV; return ``output``.

    The PNG (11 × 4 in at 150 dpi) has two panels side by side; the PSNR panel says so when no
    run has a PSNR column (runs without ``--reference``). Each line is labelled with the CSV's
    file stem (``folder/stem`` when stems repeat); raises :class:`PlotError` for a bad CSV.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(f"plotting needs matplotlib: {INSTALL_HINT}") from None
    if not csv_paths:
        raise PlotError("no run log to plot")
    runs = [(Path(path), read_run_csv(Path(path))) for path in csv_paths]
    labels = [path.stem for path, _ in runs]
    if len(set(labels)) < len(labels):  # e.g. OUT/TABLE/*/input_dip.csv: name the folder too
        labels = [f"{path.parent.name}/{path.stem}" for path, _ in runs]
    figure = Figure(figsize=(11, 4), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    ax_loss, ax_psnr = figure.subplots(1, 2)
    any_psnr = False
    for label, (_, columns) in zip(labels, runs, strict=True):
        loss = [(i, v) for i, v in zip(columns["iteration"], columns["loss"], strict=True)
                if i is not None and v is not None and v > 0 and math.isfinite(v)]
        marker = "o" if len(loss) <= _MARKERS_UP_TO else None  # short logs stay visible
        (line,) = ax_loss.plot([i for i, _ in loss], [v for _, v in loss], label=label,
                               marker=marker, markersize=3)
        psnr = [(i, v) for i, v in zip(columns["iteration"], columns["psnr"], strict=True)
                if i is not None and v is not None and math.isfinite(v)]
        if psnr:
            any_psnr = True
            ax_psnr.plot([i for i, _ in psnr], [v for _, v in psnr], label=label,
                         color=line.get_color(), marker=marker, markersize=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize="small")
    ax_psnr.set_xlabel("iteration")
    ax_psnr.set_ylabel("PSNR (dB)")
    ax_psnr.set_title("PSNR against the reference")
    ax_psnr.grid(True, alpha=0.3)
    if any_psnr:
        ax_psnr.legend(fontsize="small")
    else:
        ax_psnr.text(0.5, 0.5, "no PSNR in these logs\n(run with --reference)",
                     ha="center", va="center", transform=ax_psnr.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(output, buffer.getvalue())
    return output


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) floats in [0, 1] → (H, W, 3) uint8."""
    array = np.asarray(pixels, dtype=np.float64)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"a panel must be (H, W), (H, W, 1) or (H, W, 3); got {array.shape}")
    array = array[:, :, :3]
    if array.shape[2] == 1:
        array = array.repeat(3, axis=2)
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def compare_image(panels: Sequence[tuple[str, np.ndarray]], output: Path) -> Path:
    """Draw ``panels`` — (title, pixels (H, W[, C]) float in [0, 1]) — side by side as a PNG.

    Each title (may hold ``\\n``) is written above its image with PIL's default font. Panels
    narrower than :data:`MIN_PANEL_WIDTH` px are enlarged by an integer factor (nearest
    neighbour; the same factor for all, from the widest panel) so small crops stay visible;
    shorter panels are top-aligned. Returns ``output``.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    if not panels:
        raise ValueError("compare_image needs at least one panel")
    arrays = [_to_rgb8(pixels) for _, pixels in panels]
    widest = max(a.shape[1] for a in arrays)
    scale = max(1, math.ceil(MIN_PANEL_WIDTH / widest))
    images = [PILImage.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale),
                                           PILImage.Resampling.NEAREST) for a in arrays]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    boxes = [measure.multiline_textbbox((0, 0), title, font=font) for title, _ in panels]
    text_height = max(box[3] for box in boxes) + _GAP
    widths = [max(img.width, box[2]) for img, box in zip(images, boxes, strict=True)]
    height = _GAP + text_height + max(img.height for img in images) + _GAP
    width = _GAP + sum(w + _GAP for w in widths)
    canvas = PILImage.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left = _GAP
    for (title, _), image, panel_width in zip(panels, images, widths, strict=True):
        draw.multiline_text((left, _GAP), title, fill=_TEXT, font=font)
        canvas.paste(image, (left + (panel_width - image.width) // 2, _GAP + text_height))
        left += panel_width + _GAP
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(output, buffer.getvalue())
    return output
