"""``degrade`` writes the degraded image, its ``NAME.degrade.json`` sidecar (and the mask for
inpainting); the restore commands read them, so the task's kernel, factor or mask need not be
given again, and a flag still wins over the sidecar."""

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
from tiny_problems import astronaut_crop

from deeprestore.arrays import Image
from deeprestore.io.writers import write_image


@pytest.fixture
def clean_file(tmp_path: Path) -> Path:
    """A 32×32 crop of the astronaut as a PNG."""
    path = tmp_path / "clean.png"
    write_image(path, Image(astronaut_crop(32)))
    return path


def test_degrade_writes_image_and_sidecar_and_deblur_reads_it(run_cli, clean_file, tmp_path):
    made = run_cli("degrade", clean_file, "-o", tmp_path / "in", "--task", "deblur",
                   "--kernel", "gauss25", "--seed", "4")
    assert made.code == 0, made.err
    sidecar = json.loads((tmp_path / "in" / "clean.degrade.json").read_text())
    assert sidecar["kernel"] == "gauss25" and sidecar["seed"] == 4
    assert sidecar["sigma"] == pytest.approx(2**0.5)
    restored = run_cli("deblur", tmp_path / "in" / "clean.png", "-m", "wiener", "-o",
                       tmp_path / "out", "--reference", clean_file, "--json")
    assert restored.code == 0, restored.err
    manifest = json.loads(restored.out)
    assert manifest["degradation"]["kernel"] == "gauss25"
    assert manifest["degradation"]["from"]["kernel"] == "sidecar"
    assert manifest["preset"] == "deblur-gauss"
    assert manifest["psnr_protocol"] == "y" and manifest["ssim"] is not None
    assert manifest["psnr"] > manifest["psnr_input"]
    flag_wins = run_cli("deblur", tmp_path / "in" / "clean.png", "-m", "wiener", "-o",
                        tmp_path / "out2", "--kernel", "uniform9", "--json")
    assert json.loads(flag_wins.out)["degradation"]["kernel"] == "uniform9"


def test_superres_output_is_factor_times_larger(run_cli, clean_file, tmp_path):
    assert run_cli("degrade", clean_file, "-o", tmp_path / "in", "--task", "superres",
                   "--factor", "4").code == 0
    assert iio.imread(tmp_path / "in" / "clean.png").shape == (8, 8, 3)
    result = run_cli("superres", tmp_path / "in" / "clean.png", "-m", "deepred", "--iters", "2",
                     "--set", "denoiser=nlm", "-o", tmp_path / "out", "--reference", clean_file,
                     "--json")
    assert result.code == 0, result.err
    assert iio.imread(tmp_path / "out" / "clean_deepred.png").shape == (32, 32, 3)
    manifest = json.loads(result.out)
    assert manifest["degradation"]["factor"] == 4 and manifest["preset"] == "superres-x4"


def test_inpaint_reads_the_mask_degrade_wrote(run_cli, clean_file, tmp_path):
    assert run_cli("degrade", clean_file, "-o", tmp_path / "in", "--task", "inpaint",
                   "--mask", "holes:0.2").code == 0
    assert (tmp_path / "in" / "clean.mask.png").exists()
    ok = run_cli("inpaint", tmp_path / "in" / "clean.png", "-m", "biharmonic", "-o",
                 tmp_path / "out", "--reference", clean_file, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["psnr"] > json.loads(ok.out)["psnr_input"] + 5
