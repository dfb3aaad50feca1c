"""``--sigma auto``: the noise estimator (deeprestore.physics.noise) and how the commands use it."""

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data
from tiny_problems import DEVICE_NAME

from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.writers import write_image
from deeprestore.physics.noise import clipped_variance, estimate_noise_sigma, patch_noise_std

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbm3d9"
SIGMAS = (10.0, 25.0, 50.0)


def _crop(pixels: np.ndarray, side: int = 128) -> np.ndarray:
    top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
    return pixels[top:top + side, left:left + side]


def _noisy(clean: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    """Clean + N(0, σ²) (σ on 0–255), clipped and quantised to 8 bits as a PNG is."""
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0.0, sigma / 255.0, clean.shape), 0.0, 1.0)
    return np.round(noisy * 255.0) / 255.0


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_estimate_is_within_15_percent_on_photo_crops(name, sigma):
    clean = _crop(getattr(data, name)() / 255.0)
    estimate = estimate_noise_sigma(_noisy(clean, sigma))
    assert abs(estimate - sigma) <= 0.15 * sigma, estimate


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared cbm3d9 images are not here")
@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_estimate_is_within_15_percent_on_the_cbm3d9_crops(sigma):
    paths = sorted(SHARED.glob("*.png"))
    assert len(paths) == 9
    errors = [estimate_noise_sigma(_noisy(_crop(read_image(p).pixels), sigma)) / sigma - 1
              for p in paths]
    assert max(abs(e) for e in errors) <= 0.15, errors


def test_clipping_is_what_the_correction_undoes():
    # σ = 50 near black and white: the plain patch estimate is low because of the clipping;
    # the clipped-Gaussian inversion brings most of it back.
    rng = np.random.default_rng(0)
    clean = np.concatenate([np.full((64, 32, 3), 0.08), np.full((64, 32, 3), 0.92)], axis=1)
    noisy = np.clip(clean + rng.normal(0, 50 / 255, clean.shape), 0, 1)
    plain = patch_noise_std(noisy) * 255
    assert plain < 0.75 * 50
    corrected = estimate_noise_sigma(noisy)
    assert abs(corrected - 50) < 0.5 * abs(plain - 50)
    assert corrected == pytest.approx(50, rel=0.15)


def test_the_clipped_variance_law():
    means = np.array([0.5, 0.0, 1.0, 0.2])
    variance = clipped_variance(means, 0.01)
    assert variance[0] == pytest.approx(0.01**2, rel=1e-3)  # far from 0 and 1: unclipped
    # at 0 (or 1) half the samples clip: Var = σ²(1/2 − 1/(2π)) for the half-normal mixture
    expected = 0.01**2 * (0.5 - 1 / (2 * np.pi))
    assert variance[1] == pytest.approx(expected, rel=1e-3)
    assert variance[2] == pytest.approx(expected, rel=1e-3)
    rng = np.random.default_rng(0)
    samples = np.clip(0.2 + 0.3 * rng.standard_normal(400_000), 0, 1)
    assert clipped_variance(np.array([0.2]), 0.3)[0] == pytest.approx(samples.var(), rel=0.01)


def test_a_noise_free_image_has_no_noise_and_a_tiny_one_is_refused():
    assert estimate_noise_sigma(np.full((32, 32, 3), 0.4)) == 0.0
    with pytest.raises(ValueError, match="too small"):
        estimate_noise_sigma(np.zeros((5, 40)))


def _noisy_file(tmp_path: Path, sigma: float = 25.0) -> Path:
    clean = _crop(data.astronaut() / 255.0, 64)
    path = tmp_path / "photo.png"
    write_image(path, Image(_noisy(clean, sigma)))
    return path


def test_denoise_without_sigma_estimates_it_prints_it_and_records_it(run_cli, tmp_path):
    photo = _noisy_file(tmp_path, 25.0)
    result = run_cli("denoise", photo, "-m", "nlm", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert "noise σ estimated" in result.err
    manifest = json.loads((tmp_path / "out" / "photo_nlm.json").read_text())
    degradation = manifest["degradation"]
    assert degradation["from"]["sigma"] == "estimated"
    assert degradation["sigma"] == pytest.approx(25.0, rel=0.15)
    assert f"{degradation['sigma']:.1f}" in result.err


def test_a_given_sigma_is_not_estimated(run_cli, tmp_path):
    photo = _noisy_file(tmp_path)
    result = run_cli("denoise", photo, "-m", "nlm", "--sigma", "12", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert "estimated" not in result.err
    manifest = json.loads((tmp_path / "out" / "photo_nlm.json").read_text())
    assert manifest["degradation"]["sigma"] == 12.0
    assert manifest["degradation"]["from"]["sigma"] == "flag"


def test_the_api_estimates_sigma_for_denoising():
    from deeprestore import restore

    noisy = _noisy(_crop(data.chelsea() / 255.0, 64), 50.0)
    result = restore(noisy, method="nlm", device=DEVICE_NAME)
    assert result.sigma == pytest.approx(50.0, rel=0.15)
    assert restore(noisy, method="nlm", sigma=20, device=DEVICE_NAME).sigma == 20.0


@pytest.mark.parametrize(("args", "message"), [
    (("denoise", "--sigma", "lots"), "--sigma: expected a number"),
    (("inpaint", "--mask", "MASK", "--sigma", "auto"), "not available for inpainting"),
])
def test_a_bad_sigma_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    photo = _noisy_file(tmp_path)
    mask = tmp_path / "mask.png"
    write_image(mask, Image(np.ones((64, 64, 1))))
    args = tuple(str(mask) if a == "MASK" else a for a in args)
    out = tmp_path / "out"
    result = run_cli(args[0], photo, *args[1:], "-m", "dip", "-o", out)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err and not out.exists()
