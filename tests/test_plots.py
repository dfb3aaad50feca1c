"""Plots of run logs (matplotlib, optional) and labelled side-by-side panels (PIL)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from deeprestore.io.images import read_image
from deeprestore.io.plots import PlotError, PlotUnavailable, compare_image, plot_runs
from deeprestore.io.writers import write_csv
from deeprestore.solvers.base import LogRow


def engine_log(path: Path, with_psnr: bool) -> Path:
    rows = [LogRow(i, 1.0 / i, 20.0 + np.log(i) if with_psnr else None, 0.01, 0.1 * i,
                   i % 10) for i in range(10, 110, 10)]
    write_csv(path, rows)
    return path


def test_plot_runs_draws_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    logs = [engine_log(tmp_path / "a_deepred.csv", True),
            engine_log(tmp_path / "a_dip.csv", False)]
    output = plot_runs(logs, tmp_path / "plots" / "runs.png")
    assert output == tmp_path / "plots" / "runs.png"
    image = read_image(output)
    assert (image.width, image.height) == (1650, 600)  # 11 × 4 in at 150 dpi
    assert image.pixels.std() > 0.01  # not blank


def test_plot_runs_without_matplotlib_says_how_to_install(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    log = engine_log(tmp_path / "a.csv", True)
    with pytest.raises(PlotUnavailable, match=r'pip install "deeprestore\[plot\]"'):
        plot_runs([log], tmp_path / "runs.png")


def test_plot_runs_rejects_other_csvs(tmp_path: Path):
    pytest.importorskip("matplotlib")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(PlotError, match="other.csv: not a run log"):
        plot_runs([other], tmp_path / "runs.png")
    with pytest.raises(PlotError, match="no such file"):
        plot_runs([tmp_path / "absent.csv"], tmp_path / "runs.png")


def test_compare_image_puts_labelled_panels_side_by_side(tmp_path: Path):
    rgb = np.linspace(0, 1, 16 * 16 * 3).reshape(16, 16, 3)
    grey = np.full((8, 16, 1), 0.5)
    output = compare_image([("noisy\n20.00 dB", rgb), ("grey", grey)], tmp_path / "c.png")
    image = read_image(output)
    assert image.channels == 3
    assert image.width >= 2 * 128  # small panels are enlarged to at least 128 px
    assert image.height > 128  # room for the two-line title
