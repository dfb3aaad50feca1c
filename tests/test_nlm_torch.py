"""nlm_torch against scikit-image's fast non-local means, called as the DeepRED authors did.

The float32 comparisons run on the test device; the float64 exactness checks on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data
from skimage.restoration import denoise_nl_means
from tiny_problems import DEVICE

import deeprestore.denoisers.nlm_torch as nlm_torch_module
from deeprestore.denoisers.nlm_torch import _fast_exp, _reflect_index, nlm_torch

SIGMAS = (3, 5, 15, 25)
# Observed in float32 on 24 colour cases (3 pictures x 2 sizes x 4 sigmas): |dPSNR| <= 1.5e-5 dB,
# max |diff| <= 1.1e-6, mean |diff| <= 1.4e-7. The bounds leave room for a rare weight that flips
# at the distance cutoff (float32 box sums): it moves one pixel by up to ~1e-4 (2.5e-5 seen once,
# on 512 x 512). Float64 input matches skimage to 1e-15 (tests below).
PSNR_TOL_DB = 1e-3
MAX_ABS_TOL = 2e-4
MEAN_ABS_TOL = 1e-6


def skimage_nlm_authors(img: np.ndarray, sigma: float) -> np.ndarray:
    """The DeepRED authors' ``non_local_means``: img (C, H, W) in [0, 1], sigma on 0-255 scale.

    Each channel separately (2-D grayscale call), h = 0.6 s, sigma = s = sigma / 255, fast mode,
    5 x 5 patches, 13 x 13 search window; returned as float32 (C, H, W) like theirs.
    """
    s = sigma / 255.0
    kw = dict(h=0.6 * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6)
    out = [denoise_nl_means(img[ch], channel_axis=None, **kw) for ch in range(img.shape[0])]
    return np.array(out, dtype=np.float32)


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    """PSNR in dB of img against ref, both in [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((ref.astype(np.float64) - img) ** 2)))


def crop(name: str, size: int) -> np.ndarray:
    """A (3, size, size) float32 crop in [0, 1] from a scikit-image sample picture."""
    rgb = getattr(data, name)()
    r0, c0 = rgb.shape[0] // 3, rgb.shape[1] // 3
    patch = rgb[r0 : r0 + size, c0 : c0 + size].astype(np.float32) / 255.0
    return np.ascontiguousarray(patch.transpose(2, 0, 1))


def add_noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Gaussian noise of std sigma/255, clipped to [0, 1], float32 (as the authors' loader)."""
    rng = np.random.default_rng(seed)
    noisy = img + rng.normal(scale=sigma / 255.0, size=img.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


COLOUR_CASES = [
    (name, size, sigma)
    for name in ("astronaut", "chelsea", "coffee")
    for size in (64, 128)
    for sigma in SIGMAS
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors


@pytest.mark.parametrize(("name", "size", "sigma"), COLOUR_CASES)
def test_matches_skimage_colour(name: str, size: int, sigma: int) -> None:
    clean = crop(name, size)
    noisy = add_noise(clean, sigma, seed=size + sigma)
    ref = skimage_nlm_authors(noisy, sigma)
    out = nlm_torch(torch.from_numpy(noisy)[None].to(DEVICE), sigma)[0].cpu().numpy()
    diff = np.abs(out - ref)
    assert abs(psnr(clean, out) - psnr(clean, ref)) < PSNR_TOL_DB
    assert diff.max() < MAX_ABS_TOL
    assert diff.mean() < MEAN_ABS_TOL


def test_float64_is_exact_with_other_parameters() -> None:
    rng = np.random.default_rng(7)
    img = rng.random((2, 37, 45))
    for patch_size, distance, h_factor in [(5, 6, 0.6), (3, 2, 1.0), (4, 3, 0.8), (7, 4, 0.6)]:
        s = 20 / 255.0
        ref = np.stack(
            [
                denoise_nl_means(
                    ch,
                    h=h_factor * s,
                    sigma=s,
                    fast_mode=True,
                    patch_size=patch_size,
                    patch_distance=distance,
                )
                for ch in img
            ]
        )
        out = nlm_torch(
            torch.from_numpy(img)[None],
            20,
            patch_size=patch_size,
            patch_distance=distance,
            h_factor=h_factor,
        )[0].numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 14),
    width=st.integers(2, 14),
    patch_size=st.integers(1, 7),
    distance=st.integers(0, 6),
    sigma=st.floats(1.0, 60.0),
    seed=st.integers(0, 2**16),
)
def test_float64_exact_on_small_images(
    height: int, width: int, patch_size: int, distance: int, sigma: float, seed: int
) -> None:
    img = np.random.default_rng(seed).random((height, width))
    s = sigma / 255.0
    ref = denoise_nl_means(
        img, h=0.6 * s, sigma=s, fast_mode=True, patch_size=patch_size, patch_distance=distance
    )
    out = nlm_torch(
        torch.from_numpy(img)[None, None], sigma, patch_size=patch_size, patch_distance=distance
    )[0, 0].numpy()
    np.testing.assert_allclose(out, ref.reshape(height, width), rtol=0, atol=1e-12)


def test_grayscale_matches_skimage() -> None:
    clean = crop("astronaut", 64)[:1]
    noisy = add_noise(clean, 15, seed=3)
    out = nlm_torch(torch.from_numpy(noisy)[None].to(DEVICE), 15)
    assert out.shape == (1, 1, 64, 64)
    np.testing.assert_allclose(out[0].cpu().numpy(), skimage_nlm_authors(noisy, 15), rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_preserved(dtype: torch.dtype) -> None:
    x = torch.rand(1, 3, 33, 20, dtype=dtype).to(DEVICE)
    out = nlm_torch(x, 10)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_batch_equals_per_image() -> None:
    a = torch.from_numpy(add_noise(crop("chelsea", 64), 25, seed=1)).to(DEVICE)
    b = torch.from_numpy(add_noise(crop("coffee", 64), 25, seed=2)).to(DEVICE)
    batched = nlm_torch(torch.stack([a, b]), 25)
    torch.testing.assert_close(batched[0], nlm_torch(a[None], 25)[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(batched[1], nlm_torch(b[None], 25)[0], rtol=0, atol=1e-6)


def test_sigma25_improves_psnr() -> None:
    clean = crop("astronaut", 128)
    noisy = add_noise(clean, 25, seed=11)
    out = nlm_torch(torch.from_numpy(noisy)[None].to(DEVICE), 25)[0].cpu().numpy()
    assert psnr(clean, out) > psnr(clean, noisy) + 3.0


def test_sigma_zero_and_bad_input() -> None:
    x = torch.rand(1, 1, 8, 8)
    out = nlm_torch(x, 0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError):
        nlm_torch(x[0], 10)
    with pytest.raises(ValueError):
        nlm_torch(x, -1)
    with pytest.raises(TypeError):
        nlm_torch(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 10)


def test_fast_exp_matches_skimage_bit_trick() -> None:
    y = -np.linspace(0.0, 5.0, 5001)
    high = (np.trunc(y * 1512775.3951951856938).astype(np.int64) + 1072632447) << 32
    expected = high.view(np.float64)  # the C union: high word set, low word 0 (little endian)
    np.testing.assert_array_equal(_fast_exp(torch.from_numpy(y)).numpy(), expected)
    got32 = _fast_exp(torch.from_numpy(y).float()).double().numpy()
    np.testing.assert_allclose(got32, expected, rtol=2e-6, atol=0)
    assert abs(expected[0] - 0.9710) < 1e-4  # the null shift's weight


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect_index_matches_numpy(n: int) -> None:
    for pad in (0, 1, 5, 17):
        expected = np.pad(np.arange(n), pad, mode="reflect")
        np.testing.assert_array_equal(_reflect_index(n, pad, torch.device("cpu")).numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.from_numpy(add_noise(crop("coffee", 128), 15, seed=5))[None]
    out = nlm_torch(x.cuda(), 15)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), nlm_torch(x, 15), rtol=0, atol=MAX_ABS_TOL)


def test_on_a_gpu_the_chunk_follows_the_free_memory(monkeypatch) -> None:
    """CUDA's free memory sets the chunk (no GPU here: the query is monkeypatched)."""
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * gib, 80 * gib))
    assert nlm_torch_module.chunk_elements(torch.device("cpu")) == 1 << 20
    big = nlm_torch_module.chunk_elements(torch.device("cuda"))
    assert big == 10 * gib // 48 and big > 200 * (1 << 20)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (gib // 64, 80 * gib))
    assert nlm_torch_module.chunk_elements(torch.device("cuda")) == 1 << 20  # never below


def test_the_chunk_changes_nothing_but_speed(monkeypatch) -> None:
    """All shifts in one chunk (a GPU's) or a few at a time (a CPU's): the same image."""
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    small = nlm_torch(x, 25.0)
    monkeypatch.setattr(nlm_torch_module, "chunk_elements", lambda device: 1 << 40)
    whole = nlm_torch(x, 25.0)
    monkeypatch.setattr(nlm_torch_module, "chunk_elements", lambda device: 1)
    one_at_a_time = nlm_torch(x, 25.0)
    torch.testing.assert_close(whole, small, rtol=0, atol=1e-12)
    torch.testing.assert_close(one_at_a_time, small, rtol=0, atol=1e-12)
