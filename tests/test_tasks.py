import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from tiny_problems import restore

from deeprestore.apps.degrade import degrade_pixels
from deeprestore.config.presets import load_preset
from deeprestore.config.settings import Settings
from deeprestore.io.images import Image
from deeprestore.io.writers import write_image
from deeprestore.metrics import luminance_y, psnr_rgb, psnr_y
from deeprestore.solvers.baselines import wiener_deconvolution
from deeprestore.tasks import TaskOptions, build_problem

# ------------------------------------------------------------------------- PSNR protocols


def test_luminance_matches_scikit_image_and_the_papers_formula():
    rng = np.random.default_rng(1)
    rgb8 = rng.integers(0, 256, (9, 7, 3)).astype(np.float64)
    ours = luminance_y(torch.from_numpy(rgb8.transpose(2, 0, 1))[None] / 255.0)[0, 0].numpy()
    formula = np.round((65.481 * rgb8[..., 0] + 128.553 * rgb8[..., 1]
                        + 24.966 * rgb8[..., 2]) / 255.0 + 16.0)
    assert np.array_equal(ours, formula)
    assert np.array_equal(ours, np.round(rgb2ycbcr(rgb8 / 255.0)[..., 0]))


def test_y_psnr_quantises_and_differs_from_rgb_psnr():
    g = torch.Generator().manual_seed(0)
    a = torch.round(torch.rand(1, 3, 16, 16, generator=g) * 200 + 20) / 255
    b = a + 0.001  # a quarter of an 8-bit step: RGB PSNR sees it, quantised Y does not
    assert psnr_rgb(a, b).item() == pytest.approx(60.0, abs=0.01)
    assert psnr_y(a, b).item() > 150
    c = (a + 0.05).clamp(0, 1)
    expected = 10 * np.log10(255**2 / torch.mean((luminance_y(a) - luminance_y(c)) ** 2).item())
    assert psnr_y(a, c).item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------- problems per task


def _image(size: int = 32, seed: int = 0) -> np.ndarray:
    from skimage import data

    a = data.astronaut()[40 : 40 + size, 200 : 200 + size] / 255.0
    return a.astype(np.float64)


def test_superres_problem_sizes_and_bicubic_start():
    clean = _image(32)
    degraded = degrade_pixels(clean, "superres", factor=4)
    assert degraded.image.shape == (8, 8, 3)
    assert degraded.params["crop"] == [0, 0, 32, 32]
    tp = build_problem(TaskOptions("superres", factor=4), Image(degraded.image), Image(clean))
    p = tp.problem
    assert p.x_init.shape == (1, 3, 32, 32) and p.y.shape == (1, 3, 8, 8)
    assert p.operator.forward(p.x_init).shape == p.y.shape
    assert tp.protocol == "y" and "bicubic" in tp.baselines


def test_superres_reference_is_cropped_like_degrade():
    clean = _image(35)  # 35 = 32 + 3: degrade keeps the centre 32×32
    degraded = degrade_pixels(clean, "superres", factor=4)
    top, left, h, w = degraded.params["crop"]
    assert (h, w) == (32, 32) and top == 1 and left == 1
    tp = build_problem(TaskOptions("superres", factor=4, crop=(top, left, h, w)),
                       Image(degraded.image), Image(clean))
    expected = torch.from_numpy(clean[1:33, 1:33].transpose(2, 0, 1))[None].float()
    assert torch.allclose(tp.problem.reference, expected)


def test_red_with_a_blur_solves_the_normal_equations_and_helps():
    clean = _image(32)
    degraded = degrade_pixels(clean, "deblur", kernel="uniform9", seed=1)
    tp = build_problem(TaskOptions("deblur", kernel="uniform9"), Image(degraded.image),
                       Image(clean))
    p = tp.problem
    settings = Settings(method="red", iterations=15, lam=0.04, sigma_f=3.25, log_every=5)
    result = restore(p, settings)
    assert psnr_y(result.image, p.reference) > psnr_y(p.y, p.reference) + 1.0


def test_wiener_inverts_a_noise_free_blur_better_than_the_blurred_image():
    clean = torch.from_numpy(_image(32).transpose(2, 0, 1))[None].float()
    from deeprestore.physics.operators import Blur, named_kernel

    blurred = Blur(named_kernel("gauss25")).forward(clean)
    restored = wiener_deconvolution(blurred, named_kernel("gauss25"), 0.5)
    assert psnr_rgb(restored, clean) > psnr_rgb(blurred, clean) + 2.0


def test_inpaint_problem_masks_the_observation():
    clean = _image(16)
    degraded = degrade_pixels(clean, "inpaint", mask="random:0.5", seed=2)
    mask = degraded.mask
    assert 0.35 < 1 - mask.mean() < 0.65
    assert np.all(degraded.image[mask == 0] == 0)


# ------------------------------------------------------------------------- CLI: degrade → restore


@pytest.fixture
def clean_file(tmp_path: Path) -> Path:
    path = tmp_path / "clean.png"
    write_image(path, Image(_image(32)))
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


def test_inpaint_mask_from_sidecar_and_wrong_size_mask(run_cli, clean_file, tmp_path):
    assert run_cli("degrade", clean_file, "-o", tmp_path / "in", "--task", "inpaint",
                   "--mask", "holes:0.2").code == 0
    assert (tmp_path / "in" / "clean.mask.png").exists()
    ok = run_cli("inpaint", tmp_path / "in" / "clean.png", "-m", "biharmonic", "-o",
                 tmp_path / "out", "--reference", clean_file, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["psnr"] > json.loads(ok.out)["psnr_input"] + 5
    small = tmp_path / "small.png"
    write_image(small, Image(np.ones((8, 10, 1))))
    bad = run_cli("inpaint", clean_file, "--mask", small, "-m", "biharmonic", "-o",
                  tmp_path / "bad")
    assert bad.code == 2
    assert "8x10" in bad.err and "32x32" in bad.err
    assert len(bad.err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "bad").iterdir()] == ["clean_biharmonic.failed.json"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("deblur", "--kernel", "blurry"), "unknown kernel 'blurry'"),
        (("superres", "--factor", "3"), "factor must be 2, 4 or 8"),
        (("degrade", "--task", "superres", "--factor", "5"), "factor must be 2, 4 or 8"),
        (("degrade", "--task", "deblur", "--kernel", "nope"), "unknown kernel"),
        (("degrade", "--task", "colourise"), "unknown task"),
        (("inpaint",), "needs a mask"),
    ],
)
def test_task_usage_errors(run_cli, clean_file, tmp_path, args, needle):
    command, *rest = args
    result = run_cli(command, clean_file, *rest, "-o", tmp_path / "o")
    assert result.code == 2, result.err
    assert needle in result.err and len(result.err.strip().splitlines()) == 1


def test_kernel_larger_than_the_image_is_refused(run_cli, tmp_path):
    tiny = tmp_path / "tiny.png"
    write_image(tiny, Image(np.full((16, 16, 3), 0.5)))
    result = run_cli("deblur", tiny, "--kernel", "gauss25", "-m", "wiener", "-o", tmp_path / "o")
    assert result.code == 2 and "25x25" in result.err


# ------------------------------------------------------------------------- Table 1 in presets

TABLE_1 = {
    # preset: (σ_noise, LR, denoiser, σ_f, λ, µ, iterations)
    "denoise": (0.033, 0.01, "nlm", 3, 0.5, 0.5, 5000),
    "superres-x4": (0.02, 0.001, "bm3d", 5, 0.05, 0.06, 2000),
    "superres-x8": (0.02, 0.001, "bm3d", 5, 0.05, 0.06, 4000),
    "deblur-uniform": (0.005, 0.003, "nlm", 3, 0.01, 0.02, 15000),
    "deblur-gauss": (0.005, 0.002, "nlm", 2, 0.015, 0.02, 20000),
}


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_presets_reproduce_table_1(name):
    s = load_preset(name).settings_for("deepred")
    got = (s.sigma_noise, s.lr, s.denoiser, s.sigma_f, s.lam, s.mu, s.iterations)
    assert got == TABLE_1[name]
    assert (s.denoise_every, s.inner_steps, s.x_update) == (10, 1, "fixed-point")
    assert (s.input_channels, s.input_scale) == (32, 0.1)


def test_preset_degradations():
    assert load_preset("deblur-uniform").degradation["kernel"] == "uniform9"
    assert load_preset("deblur-gauss").degradation["kernel"] == "gauss25"
    assert load_preset("deblur-gauss").degradation["sigma"] == pytest.approx(2**0.5)
    assert load_preset("superres-x4").degradation["factor"] == 4
    assert load_preset("superres-x8").degradation["factor"] == 8
    inpaint = load_preset("inpaint").settings_for("dip")
    assert (inpaint.lr, inpaint.sigma_noise, inpaint.skip_channels) == (0.01, 0.03, 128)


def test_every_preset_prints(run_cli):
    from deeprestore.config.presets import available_presets

    for name in available_presets():
        result = run_cli("presets", name)
        assert result.code == 0 and f'name = "{name}"' in result.out
