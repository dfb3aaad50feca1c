"""``deeprestore.restore``: numpy in, numpy out, the CLI's numbers and the CLI's error types."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from tiny_problems import DEVICE_NAME

import deeprestore
from deeprestore.arrays import ImageError
from deeprestore.config.presets import PresetError
from deeprestore.config.settings import SettingsError
from deeprestore.tasks.registry import TaskError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"iterations": 2, "log_every": 1}


def _restore(image: np.ndarray, **options: object) -> deeprestore.Restoration:
    """``deeprestore.restore`` on the test device."""
    return deeprestore.restore(image, device=DEVICE_NAME, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def noisy(demo_pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The demo's σ = 25 noisy crop, 16×16 RGB float64 in [0, 1]."""
    return demo_pair[1][:16, :16]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
def test_the_output_has_the_inputs_layout_and_dtype(noisy, dtype, grey):
    pixels = noisy.mean(axis=2) if grey else noisy
    if np.issubdtype(dtype, np.integer):
        pixels = np.round(pixels * np.iinfo(dtype).max)
    image = pixels.astype(dtype)
    restored = _restore(image, method="dip", **FAST)
    assert restored.image.shape == image.shape and restored.image.dtype == image.dtype
    assert restored.iterations == 2 and [row.iteration for row in restored.log] == [1, 2]
    assert restored.preset == "denoise" and restored.settings.method == "dip"
    if not np.issubdtype(dtype, np.integer):
        assert restored.image.min() >= 0.0 and restored.image.max() <= 1.0


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_same_numbers_as_the_command_line(run_cli, tiny_images, tmp_path, precision):
    # a precision given: ``auto`` may choose apart in two processes whose timings differ
    done = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "--iters", "2", "-q",
                   "--no-compare", "--device", "cpu", "--precision", precision, "-o", tmp_path)
    assert done.code == 0, done.err
    written = iio.imread(tmp_path / "noisy_dip.png")
    restored = _restore(iio.imread(tiny_images["noisy"]), method="dip", iterations=2,
                        precision=precision)
    assert np.array_equal(restored.image, written)


def test_a_reference_gives_the_psnr_and_settings_override_the_preset(demo_pair):
    clean, noisy = (a[:16, :16] for a in demo_pair)
    restored = _restore(noisy, method="nlm", reference=clean, sigma_f=20.0)
    assert restored.settings.sigma_f == 20.0
    assert restored.psnr is not None and restored.psnr > 10
    assert restored.log[-1].psnr == pytest.approx(restored.psnr, abs=0.05)


def test_inpainting_takes_a_mask_array(noisy):
    mask = np.ones(noisy.shape[:2])
    mask[4:8, 4:8] = 0
    restored = _restore(noisy, task="inpaint", method="biharmonic", mask=mask)
    known = mask.astype(bool)
    assert np.allclose(restored.image[known], noisy[known], atol=1e-6)


def test_superres_returns_an_image_factor_times_larger(noisy):
    restored = _restore(noisy, task="superres", method="bicubic", factor=2)
    assert restored.image.shape == (32, 32, 3)


@pytest.mark.parametrize(("call", "error"), [
    (lambda image: _restore(image[:, :, :2]), ImageError),
    (lambda image: _restore(np.full((4, 4), 0.5)), ImageError),
    (lambda image: _restore(image * np.nan), ImageError),
    (lambda image: _restore(image, task="colourise"), TaskError),
    (lambda image: _restore(image, method="wiener"), TaskError),
    (lambda image: _restore(image, sigma=-1.0), TaskError),
    (lambda image: _restore(image, task="superres", factor=3), TaskError),
    (lambda image: _restore(image, task="inpaint", method="biharmonic"), TaskError),
    (lambda image: _restore(image, task="inpaint", method="biharmonic",
                                       mask=np.ones((3, 3))), TaskError),
    (lambda image: _restore(image, preset="superres-x4"), PresetError),
    (lambda image: _restore(image, lam=-1.0), SettingsError),
    (lambda image: _restore(image, no_such_setting=1), SettingsError),
    (lambda image: _restore(image, denoiser="magic"), SettingsError),
])
def test_bad_inputs_raise_the_errors_the_command_line_reports_in_one_line(noisy, call, error):
    with pytest.raises(error) as caught:
        call(noisy)
    assert "\n" not in str(caught.value) and str(caught.value)
