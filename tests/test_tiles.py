"""Tiles: the plan covers the image, the blend is seamless, tiled runs match untiled ones."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_problems import ON_CPU

from deeprestore.apps.jobs import run
from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.writers import write_image
from deeprestore.metrics import psnr_rgb
from deeprestore.tiles import Blender, plan_tiles, split


@settings(max_examples=60, deadline=None)
@given(length=st.integers(8, 900), tile=st.integers(20, 300), overlap=st.integers(0, 19))
def test_split_covers_the_side_with_the_promised_overlap(length, tile, overlap):
    starts, size = split(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + size == length
    assert len(starts) == max(1, math.ceil(length / tile))
    assert size <= min(length, tile + overlap)
    for before, after in zip(starts, starts[1:], strict=False):
        assert before + size - after >= overlap  # neighbours overlap enough


@settings(max_examples=30, deadline=None)
@given(height=st.integers(8, 200), width=st.integers(8, 200), tile=st.integers(24, 120),
       seed=st.integers(0, 100))
def test_blending_the_tiles_of_an_image_gives_the_image_back(height, width, tile, seed):
    image = torch.rand(1, 2, height, width, generator=torch.Generator().manual_seed(seed))
    boxes = plan_tiles(height, width, tile, 16)
    blender = Blender(boxes, 2, height, width)
    for box in boxes:
        blender.add(box, image[..., box.top:box.top + box.height, box.left:box.left + box.width])
    assert torch.allclose(blender.result(), image, atol=1e-6)


def test_the_window_ramps_only_where_a_neighbour_overlaps():
    boxes = plan_tiles(100, 40, 50, 16)  # two rows, one column
    blender = Blender(boxes, 1, 100, 40)
    top = blender.window(boxes[0])[0, 0]
    assert torch.all(top[0] == 1) and torch.all(top[10] == 1)  # no ramp at the borders
    assert float(top[-1, 0]) < 0.01  # falls towards the neighbour below
    # across the overlap the two windows of a constant image sum to a smooth weight: a tile
    # with a different offset blends in gradually, with no jump larger than the ramp's step
    blender.add(boxes[0], torch.zeros(1, 1, boxes[0].height, 40))
    blender.add(boxes[1], torch.ones(1, 1, boxes[1].height, 40))
    column = blender.result()[0, 0, :, 20]
    assert float(column[0]) == 0 and float(column[-1]) == 1
    assert float(column.diff().abs().max()) < 0.2 and bool((column.diff() >= 0).all())


def _noisy_pair(tmp_path, side: int):
    gen = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    clean = np.stack([0.5 + 0.3 * np.sin(6 * x + 2 * y), 0.5 + 0.3 * np.cos(5 * y),
                      0.4 + 0.2 * x], axis=2)
    noisy = np.clip(clean + gen.normal(0, 25 / 255, clean.shape), 0, 1)
    write_image(tmp_path / "clean.png", Image(clean))
    write_image(tmp_path / "noisy.png", Image(noisy))
    return tmp_path / "noisy.png", tmp_path / "clean.png"


def _psnr(path, reference) -> float:
    def tensor(p):
        return torch.from_numpy(read_image(p).pixels).permute(2, 0, 1)[None].float()

    return float(psnr_rgb(tensor(path), tensor(reference)))


@pytest.mark.parametrize(("method", "extra"), [
    ("nlm", ()),  # a local method: tiling must not change it (both ways within 0.3 dB)
    ("dip", ("--iters", "60", "--set", "net_channels=8", "--set", "runs=1", "--set",
             "output=network", "--set", "lr=0.02")),
])
def test_a_512px_image_in_256px_tiles_is_within_0_3_db_of_the_untiled_run(
        run_cli, tmp_path, method, extra):
    noisy, clean = _noisy_pair(tmp_path, 512)
    common = ("denoise", noisy, "--method", method, "--sigma", "25", "--reference", clean,
              "--no-compare", "-q", *extra)
    whole = run_cli(*common, "-o", tmp_path / "whole")
    tiled = run_cli(*common, "--tile", "256", "-o", tmp_path / "tiled")
    assert whole.code == 0 and tiled.code == 0, whole.err + tiled.err
    manifest = json.loads((tmp_path / "tiled" / f"noisy_{method}.json").read_text())
    assert manifest["tiling"]["grid"] == [2, 2] and manifest["tiling"]["overlap"] == 32
    assert json.loads((tmp_path / "whole" / f"noisy_{method}.json").read_text())["tiling"] is None
    psnr_whole = _psnr(tmp_path / "whole" / f"noisy_{method}.png", clean)
    psnr_tiled = _psnr(tmp_path / "tiled" / f"noisy_{method}.png", clean)
    if method == "nlm":
        assert abs(psnr_tiled - psnr_whole) <= 0.3
    else:  # smaller problems converge sooner: after few iterations tiles may be ahead
        assert psnr_tiled >= psnr_whole - 0.3
    header = (tmp_path / "tiled" / f"noisy_{method}.csv").read_text().splitlines()[0]
    assert header.startswith("tile,iteration,")


_MEASURED_RUN = """
import resource, sys, torch
from deeprestore.cli.main import main
net = torch.nn.Conv2d(3, 8, 3)
net(torch.rand(1, 3, 64, 64)).sum().backward()  # the runtime's one-time set-up, not the run's
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"grew {(peak - base) * 1024} bytes", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.cpu_only(reason="measures the process's host memory against the CPU estimate")
def test_a_2048x1536_image_runs_tiled_with_an_eta_and_stays_under_its_memory_estimate(tmp_path):
    pixels = np.random.default_rng(1).random((1536, 2048, 3))
    write_image(tmp_path / "big.png", Image(pixels))
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED_RUN, "denoise", str(tmp_path / "big.png"), "--method",
         "dip", "--iters", "2", "--sigma", "25", "--tile", "512", "--set", "net_channels=8",
         "--set", "runs=1", "--threads", "1", "--device", "cpu", "--no-compare", "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(text for text in done.stderr.splitlines() if "tiles of 512 px" in text)
    assert "3×4 tiles" in line and " in all" in line  # the ETA, before the run
    tile_bytes = _size(line.split("peak memory ≈ ")[1].split(" of ")[0])
    whole_bytes = _size(line.split("plus ")[1].split(" for the whole")[0])
    grew = int(done.stderr.split("grew ")[1].split(" bytes")[0])
    assert grew <= tile_bytes + whole_bytes
    manifest = json.loads((tmp_path / "out" / "big_dip.json").read_text())
    assert len(manifest["tiling"]["tiles"]) == 12
    assert read_image(tmp_path / "out" / "big_dip.png").pixels.shape == (1536, 2048, 3)


def _size(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def test_out_of_memory_mid_run_is_one_line_naming_a_tile_that_fits(run_cli, tmp_path,
                                                                  monkeypatch):
    noisy, _ = _noisy_pair(tmp_path, 64)

    def exhausted(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run, "restore", exhausted)
    result = run_cli("denoise", noisy, "--method", "dip", "--sigma", "25", "--iters", "3",
                     "-o", tmp_path / "out")
    assert result.code == 1
    assert "ran out of memory" in result.err and "--tile 32" in result.err
    assert "Traceback" not in result.err
    assert not any(p.suffix in (".png", ".csv") for p in (tmp_path / "out").glob("*"))


def test_a_memory_budget_too_small_for_the_whole_image_tiles_it_automatically(run_cli,
                                                                             tmp_path):
    noisy, _ = _noisy_pair(tmp_path, 256)
    args = ("denoise", noisy, "--method", "dip", "--sigma", "25", "--iters", "2", "--set",
            "net_channels=8", "--set", "runs=1", "--no-compare")
    whole = run_cli(*args, "-o", tmp_path / "probe")
    if not ON_CPU:  # the first run at a size autotunes cuDNN (its trial workspaces count in its
        whole = run_cli(*args, "-o", tmp_path / "again")  # peak); the tiled run's will not
    peak = whole.err.split("peak memory ≈ ")[1].split(" of ")[0]
    budget = f"{_size(peak) * 0.6 / 1024**2:.0f}MB"  # the whole image no longer fits
    tiled = run_cli(*args, "--max-memory", budget, "-o", tmp_path / "out")
    assert tiled.code == 0, tiled.err
    assert "restoring it in tiles" in tiled.err
    manifest = json.loads((tmp_path / "out" / "noisy_dip.json").read_text())
    assert manifest["tiling"] is not None and len(manifest["tiling"]["tiles"]) > 1
