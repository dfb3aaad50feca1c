"""Tests for deeprestore.physics.degradations: noise, blur, crop, resizes, masks, mask specs."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from deeprestore.physics.degradations import (
    add_gaussian_noise,
    bicubic_upscale,
    blur_image,
    crop_to_multiple,
    holes_mask,
    lanczos_downscale,
    parse_mask_spec,
    random_mask,
    text_mask,
)
from deeprestore.physics.kernels import named_kernel
from deeprestore.physics.operators import Blur

SETTINGS = settings(max_examples=25, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors


# ----------------------------------------------------------------------------- noise


def test_noise_std_on_flat_image() -> None:
    img = np.full((256, 256, 3), 0.5)
    noisy = add_gaussian_noise(img, 25, np.random.default_rng(0))
    assert noisy.shape == img.shape and noisy.dtype == np.float64
    noise = noisy - img
    assert noise.std() == pytest.approx(25 / 255, rel=0.02)
    assert abs(noise.mean()) < 1e-3
    # float, not quantised to 8 bits
    assert not np.allclose(noisy * 255, np.round(noisy * 255))


def test_noise_clipped_reproducible_and_dtype() -> None:
    img = np.zeros((32, 32, 3), dtype=np.float32)
    a = add_gaussian_noise(img, 25, np.random.default_rng(3))
    b = add_gaussian_noise(img, 25, np.random.default_rng(3))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0.0 and a.max() <= 1.0
    assert 0.3 < (a == 0).mean() < 0.7  # about half of the samples were negative and got clipped
    c = add_gaussian_noise(img + 1, 25, np.random.default_rng(3))
    assert c.max() == 1.0


def test_noise_rejects_integer_image() -> None:
    with pytest.raises(ValueError, match="float image"):
        add_gaussian_noise(np.zeros((4, 4, 3), dtype=np.uint8), 25, np.random.default_rng(0))


# ----------------------------------------------------------------------------- blur


def test_blur_image_matches_operator_and_named_kernel() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((30, 28, 3))
    k = named_kernel("gauss25")
    out = blur_image(img, "gauss25")
    assert out.shape == img.shape
    x = torch.from_numpy(np.moveaxis(img, -1, 0)[None].copy())
    ref = np.moveaxis(Blur(k)(x)[0].numpy(), 0, -1)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(blur_image(img, k), out, atol=1e-12)
    # circular: a box blur keeps the image mean exactly
    assert blur_image(img, "uniform9").mean() == pytest.approx(img.mean(), abs=1e-12)
    assert np.abs(out - img).max() > 0.05


def test_blur_image_gray_and_delta() -> None:
    img = np.random.default_rng(1).random((12, 10)).astype(np.float32)
    k = np.zeros((3, 4))
    k[1, 2] = 1.0
    out = blur_image(img, k)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-6)


# ----------------------------------------------------------------------------- crop / resize


@SETTINGS
@given(h=st.integers(8, 70), w=st.integers(8, 70), factor=st.sampled_from([2, 4, 8]))
def test_crop_to_multiple_records_box(h: int, w: int, factor: int) -> None:
    img = np.arange(h * w * 3, dtype=np.float64).reshape(h, w, 3)
    cropped, box = crop_to_multiple(img, factor)
    top, left, ch, cw = box
    assert all(type(v) is int for v in box)
    assert ch % factor == 0 and cw % factor == 0
    assert h - factor < ch <= h and w - factor < cw <= w
    assert (top, left) == ((h - ch) // 2, (w - cw) // 2)
    assert cropped.shape == (ch, cw, 3)
    np.testing.assert_array_equal(cropped, img[top : top + ch, left : left + cw])


def test_crop_to_multiple_errors() -> None:
    with pytest.raises(ValueError, match="smaller"):
        crop_to_multiple(np.zeros((3, 10)), 4)
    with pytest.raises(ValueError, match="positive integer"):
        crop_to_multiple(np.zeros((8, 8)), 0)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos_downscale_size_and_pil_equivalence(factor: int) -> None:
    rng = np.random.default_rng(factor)
    img = rng.random((8 * 6, 8 * 5, 3))
    lr = lanczos_downscale(img, factor)
    assert lr.shape == (48 // factor, 40 // factor, 3)
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ref = np.asarray(Image.fromarray(u8).resize((40 // factor, 48 // factor), Image.LANCZOS))
    np.testing.assert_array_equal(np.rint(lr * 255).astype(np.uint8), ref)
    np.testing.assert_allclose(lr * 255, np.rint(lr * 255), atol=1e-9)  # 8-bit values
    flat = lanczos_downscale(np.full((16, 16), 100 / 255), factor)
    np.testing.assert_allclose(flat, 100 / 255, atol=1e-12)
    assert lanczos_downscale(img[..., :2], factor).shape == (48 // factor, 40 // factor, 2)


def test_lanczos_downscale_requires_divisible_size() -> None:
    with pytest.raises(ValueError, match="crop_to_multiple"):
        lanczos_downscale(np.zeros((10, 12, 3)), 4)


def test_bicubic_upscale_size() -> None:
    lr = np.random.default_rng(2).random((6, 5, 3))
    up = bicubic_upscale(lr, 4)
    assert up.shape == (24, 20, 3)
    assert bicubic_upscale(lr[..., 0], 2).shape == (12, 10)
    flat = bicubic_upscale(np.full((4, 4, 3), 0.2), 8)
    np.testing.assert_allclose(flat, np.rint(0.2 * 255) / 255, atol=1e-12)


# ----------------------------------------------------------------------------- masks


@SETTINGS
@given(p=st.floats(0.0, 1.0), seed=st.integers(0, 2**20))
def test_random_mask_fraction(p: float, seed: int) -> None:
    m = random_mask(100, 120, p, np.random.default_rng(seed))
    assert m.shape == (100, 120)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert abs((1 - m.mean()) - p) < 0.03


@SETTINGS
@given(
    p=st.floats(0.0, 0.95), h=st.integers(16, 64), w=st.integers(16, 64), seed=st.integers(0, 99)
)
def test_holes_mask_fraction(p: float, h: int, w: int, seed: int) -> None:
    m = holes_mask(h, w, p, np.random.default_rng(seed))
    assert m.shape == (h, w)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert abs((1 - m.mean()) - p) < 0.05


def test_holes_mask_reproducible_and_rectangular() -> None:
    a = holes_mask(64, 64, 0.3, np.random.default_rng(5))
    b = holes_mask(64, 64, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    # holes are big blobs, not scattered pixels: most missing pixels have a missing neighbour
    miss = a == 0
    neigh = np.zeros_like(miss)
    neigh[1:] |= miss[:-1]
    neigh[:-1] |= miss[1:]
    assert (miss & neigh).sum() > 0.9 * miss.sum()


def test_text_mask() -> None:
    m = text_mask(64, 96)
    assert m.shape == (64, 96)
    assert set(np.unique(m)) == {0.0, 1.0}
    assert 0.03 < 1 - m.mean() < 0.5
    assert (m[: m.shape[0] // 2] == 0).any() and (m[m.shape[0] // 2 :] == 0).any()
    np.testing.assert_array_equal(m, text_mask(64, 96))
    assert not np.array_equal(m, text_mask(64, 96, text="other words here"))
    with pytest.raises(ValueError, match="empty"):
        text_mask(8, 8, text="  ")


def test_parse_mask_spec_builtin() -> None:
    rng = np.random.default_rng(0)
    m = parse_mask_spec("random:0.3", 80, 90, rng)
    assert m.shape == (80, 90) and abs((1 - m.mean()) - 0.3) < 0.03
    m = parse_mask_spec("holes:0.2", 80, 90, rng)
    assert m.shape == (80, 90) and abs((1 - m.mean()) - 0.2) < 0.05
    np.testing.assert_array_equal(parse_mask_spec("text", 40, 50, rng), text_mask(40, 50))
    for bad in ("random:abc", "holes:1.5", "random:"):
        with pytest.raises(ValueError, match="mask spec"):
            parse_mask_spec(bad, 8, 8, rng)
    with pytest.raises(ValueError, match="neither"):
        parse_mask_spec("no/such/file.png", 8, 8, rng)


def test_parse_mask_spec_file(tmp_path: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(0)
    gray = np.zeros((6, 7), dtype=np.uint8)
    gray[1:4, 2:5] = 255
    gray[5, 6] = 1  # any nonzero value is "known"
    iio.imwrite(tmp_path / "m.png", gray)
    m = parse_mask_spec(str(tmp_path / "m.png"), 6, 7, rng)
    np.testing.assert_array_equal(m, (gray != 0).astype(np.float64))
    rgb = np.zeros((6, 7, 3), dtype=np.uint8)
    rgb[2, 3, 1] = 200
    iio.imwrite(tmp_path / "c.png", rgb)
    m = parse_mask_spec(str(tmp_path / "c.png"), 6, 7, rng)
    assert m.sum() == 1.0 and m[2, 3] == 1.0
    with pytest.raises(ValueError) as info:
        parse_mask_spec(str(tmp_path / "m.png"), 64, 64, rng)
    assert str(info.value) == "mask is 6x7 but the image is 64x64"
