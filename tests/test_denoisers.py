import numpy as np
import pytest
import torch

from deeprestore.denoisers import DENOISERS, choose_denoiser, get_denoiser
from deeprestore.metrics import psnr_rgb


@pytest.fixture(scope="module")
def pair(demo_pair):
    clean, noisy = demo_pair

    def to(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[:32, :32].transpose(2, 0, 1)))[None]

    return to(clean).float(), to(noisy).float()


REFERENCE = ["nlm", pytest.param("bm3d", marks=pytest.mark.needs_bm3d)]


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_denoisers_improve_psnr(pair, name):
    clean, noisy = pair
    out = get_denoiser(name)(noisy, 25.0)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    assert psnr_rgb(out, clean) > psnr_rgb(noisy, clean) + 3.0


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_denoisers_on_grey_and_batches(pair, name):
    clean, noisy = pair
    grey_noisy = noisy.mean(dim=1, keepdim=True)
    grey_clean = clean.mean(dim=1, keepdim=True)
    out = get_denoiser(name)(grey_noisy, 25.0)
    assert out.shape == grey_noisy.shape
    assert psnr_rgb(out, grey_clean) > psnr_rgb(grey_noisy, grey_clean)
    batch = torch.cat([noisy, noisy.flip(-1)])
    both = get_denoiser(name)(batch, 25.0)
    assert torch.allclose(both[0], get_denoiser(name)(noisy, 25.0)[0], atol=1e-6)


def test_sigma_zero_is_identity_and_negative_sigma_is_refused(pair):
    _, noisy = pair
    assert torch.equal(get_denoiser("nlm")(noisy, 0.0), noisy)
    with pytest.raises(ValueError, match="sigma"):
        get_denoiser("nlm")(noisy, -1.0)


def test_stronger_sigma_smooths_more(pair):
    _, noisy = pair
    weak = get_denoiser("nlm")(noisy, 5.0)
    strong = get_denoiser("nlm")(noisy, 30.0)
    assert (strong - noisy).abs().mean() > (weak - noisy).abs().mean()


def test_choose_denoiser():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_denoiser("auto", "nlm", cpu) == "nlm"
    assert choose_denoiser("auto", "bm3d", cuda) == "bm3d-torch"
    assert choose_denoiser("auto", "nlm-torch", cpu) == "nlm"
    assert choose_denoiser("bm3d", "nlm", cuda) == "bm3d"
    with pytest.raises(ValueError, match="unknown denoiser"):
        choose_denoiser("wavelet", "nlm", cpu)
    assert set(DENOISERS) == {"nlm", "bm3d", "nlm-torch", "bm3d-torch"}


@pytest.mark.needs_bm3d
def test_bm3d_thread_count_reaches_the_package_and_one_thread_is_reproducible(pair, monkeypatch):
    import bm3d

    seen = []
    real = bm3d.bm3d_rgb

    def spy(z, sigma_psd, profile="np", **kw):
        seen.append(profile.num_threads)
        return real(z, sigma_psd, profile=profile, **kw)

    _, noisy = pair
    monkeypatch.setattr(bm3d, "bm3d_rgb", spy)
    one = get_denoiser("bm3d")(noisy, 25.0, threads=1)
    again = get_denoiser("bm3d")(noisy, 25.0, threads=1)
    default = get_denoiser("bm3d")(noisy, 25.0)
    assert seen == [1, 1, 0]  # 0: the package's automatic choice
    assert torch.equal(one, again)
    assert torch.allclose(one, default, atol=1e-5)  # more threads: last bits may differ


def test_denoiser_threads_are_validated_and_ignored_by_single_threaded_ones(pair):
    _, noisy = pair
    nlm = get_denoiser("nlm")
    assert not nlm.threaded and get_denoiser("bm3d").threaded
    assert torch.equal(nlm(noisy, 25.0, threads=2), nlm(noisy, 25.0))
    with pytest.raises(ValueError, match="threads"):
        nlm(noisy, 25.0, threads=0)


@pytest.mark.needs_bm3d
@pytest.mark.parametrize("image", ["zeros", "constant", "grey"])
def test_bm3d_on_images_with_a_flat_colour_channel(image):
    # CBM3D's colour transform divides by each channel's range: flat ones used to give NaN
    # (DeepRED's SR starts from x = 0; a grey photo stored as RGB has flat chroma)
    grey = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    x = {"zeros": torch.zeros(1, 3, 32, 32), "constant": torch.full((1, 3, 32, 32), 0.4),
         "grey": grey.expand(1, 3, 32, 32).contiguous()}[image]
    out = get_denoiser("bm3d")(x, 5.0)
    assert torch.isfinite(out).all()
    assert (out - x).abs().max() < 0.05
