"""Two requests that used to run something other than what they said (issue 35, item 5)."""

from __future__ import annotations

import csv
import json

import pytest
from tiny_problems import DEVICE_NAME


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_lam_zero_means_no_denoiser_for_the_whole_run(run_cli, tiny_images, tmp_path):
    # the denoise preset grows λ and µ past a data-PSNR threshold; at threshold 0 at once
    out = tmp_path / "out"
    done = run_cli("denoise", tiny_images["noisy"], "-m", "deepred", "--sigma", "25",
                   "--iters", "12", "--set", "lam=0", "--set", "grow_threshold=0",
                   "--set", "log_every=1", "--set", "net_channels=8", "--no-compare",
                   "--device", DEVICE_NAME, "-o", out)
    assert done.code == 0, done.err
    rows = _rows(out / "noisy_deepred.csv")
    assert [float(row["lam"]) for row in rows] == [0.0] * len(rows)  # it grew before
    assert float(rows[-1]["mu"]) > float(rows[0]["mu"])  # µ's growth is kept
    manifest = json.loads((out / "noisy_deepred.json").read_text())
    assert manifest["denoiser_calls"] == 0 and manifest["denoiser"] is None


@pytest.mark.needs_bm3d
def test_a_one_shot_bm3d_runs_the_implementation_named_and_records_it(run_cli, tiny_images,
                                                                     tmp_path):
    done = run_cli("denoise", tiny_images["noisy"], "-m", "bm3d", "--sigma", "25",
                   "--denoiser", "bm3d-torch", "--no-compare", "--device", DEVICE_NAME,
                   "-o", tmp_path / "torch")
    assert done.code == 0, done.err
    manifest = json.loads((tmp_path / "torch" / "noisy_bm3d.json").read_text())
    assert manifest["denoiser"] == "bm3d-torch"  # it said bm3d-torch and ran the package
    plain = run_cli("denoise", tiny_images["noisy"], "-m", "bm3d", "--sigma", "25",
                    "--no-compare", "--device", DEVICE_NAME, "-o", tmp_path / "package")
    assert plain.code == 0, plain.err
    assert json.loads((tmp_path / "package" / "noisy_bm3d.json").read_text())[
        "denoiser"] == "bm3d"
    assert (tmp_path / "torch" / "noisy_bm3d.png").read_bytes() != (
        tmp_path / "package" / "noisy_bm3d.png").read_bytes()


def test_a_one_shot_method_with_another_denoiser_is_one_line(run_cli, tiny_images, tmp_path):
    bad = run_cli("denoise", tiny_images["noisy"], "-m", "bm3d", "--denoiser", "nlm",
                  "-o", tmp_path / "out")
    assert bad.code == 2, bad.err
    lines = [line for line in bad.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--denoiser nlm is another denoiser" in lines[0]
    assert not (tmp_path / "out").exists()
