import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeprestore.models.skip import SkipNet, count_parameters, make_input, pad_to_multiple


def test_parameter_count_matches_the_dip_skip_network():
    assert count_parameters(SkipNet(32, 3)) == 2_217_831


def test_parameter_count_changes_with_channels():
    # one output channel: the 1x1 head has 128*1 + 1 parameters instead of 128*3 + 3
    assert count_parameters(SkipNet(32, 1)) == 2_217_831 - 2 * 128 - 2


@pytest.fixture(scope="module")
def net() -> SkipNet:
    torch.manual_seed(0)
    return SkipNet(4, 3, channels=8, skip_channels=2)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70))
def test_output_has_the_input_size_for_any_size(net: SkipNet, h: int, w: int):
    out = net(torch.rand(1, 4, h, w))
    assert out.shape == (1, 3, h, w)
    assert torch.all((out > 0) & (out < 1))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 80), w=st.integers(1, 80), m=st.sampled_from([8, 32]))
def test_padding_reaches_a_multiple_and_keeps_the_original(h: int, w: int, m: int):
    x = torch.rand(1, 2, h, w)
    padded = pad_to_multiple(x, m, minimum=2 * m)
    ph, pw = padded.shape[-2:]
    assert ph % m == 0 and pw % m == 0 and ph >= 2 * m and pw >= 2 * m
    assert ph - h < m or ph == 2 * m
    assert torch.equal(padded[..., :h, :w], x)


def test_padding_reflects():
    x = torch.arange(5.0).view(1, 1, 1, 5)
    padded = pad_to_multiple(x.expand(1, 1, 8, 5).contiguous(), 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]


def test_input_kinds_and_scale():
    g = torch.Generator().manual_seed(0)
    z = make_input(32, 64, 64, scale=0.1, kind="gaussian", generator=g)
    assert z.shape == (1, 32, 64, 64)
    assert abs(z.std().item() - 0.1) < 0.005
    u = make_input(32, 64, 64, scale=0.1, kind="uniform", generator=g)
    assert u.min() >= 0 and u.max() < 0.1
    with pytest.raises(ValueError, match="unknown input kind"):
        make_input(1, 2, 2, kind="laplace")
