"""Tests for deeprestore.physics.operators: adjointness, shapes, conventions, kernels, errors,
gradients."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from deeprestore.physics.kernels import (
    FACTORS,
    bicubic_kernel,
    check_sr_factor,
    lanczos2_kernel,
    load_kernel,
    named_kernel,
)
from deeprestore.physics.operators import (
    Blur,
    Compose,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
)

SETTINGS = settings(max_examples=25, deadline=None)
DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors


def _randn(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT)


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def _check_adjoint(op: LinearOperator, x_shape: tuple[int, ...], seed: int) -> None:
    x = _randn(seed, *x_shape)
    hx = op.forward(x)
    y = _randn(seed + 1, *hx.shape)
    hty = op.adjoint(y)
    assert hty.shape == x.shape
    lhs, rhs = _inner(hx, y), _inner(x, hty)
    scale = max(abs(lhs), abs(rhs), float(hx.norm() * y.norm()) * 1e-3, 1e-12)
    assert abs(lhs - rhs) <= 1e-5 * scale, (lhs, rhs)


def _naive_circular_conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """y[i, j] = sum_{a,b} k[a, b] x[(i - a + kh//2) % H, (j - b + kw//2) % W]."""
    h, w = x.shape
    kh, kw = k.shape
    y = np.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            y += k[a, b] * np.roll(x, shift=(a - kh // 2, b - kw // 2), axis=(0, 1))
    return y


def _dip_lanczos2_reference(factor: int) -> np.ndarray:
    """Loop transcription of deep-image-prior's get_kernel(f, 'lanczos', 0.5, 4f+1, support=2)."""
    kw = 4 * factor + 1
    center = (kw + 1) / 2.0
    ker = np.zeros((kw - 1, kw - 1))
    for i in range(1, kw):
        for j in range(1, kw):
            val = 1.0
            for d in (abs(i + 0.5 - center) / factor, abs(j + 0.5 - center) / factor):
                val *= 2 * np.sin(np.pi * d) * np.sin(np.pi * d / 2) / (np.pi**2 * d * d)
            ker[i - 1, j - 1] = val
    return ker / ker.sum()


# ----------------------------------------------------------------------------- adjoint tests

shape_st = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 32), st.integers(1, 32))


@SETTINGS
@given(shape=shape_st, seed=st.integers(0, 2**20))
def test_identity_adjoint(shape: tuple[int, int, int, int], seed: int) -> None:
    _check_adjoint(Identity(), shape, seed)


@st.composite
def blur_case(draw: st.DrawFn) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    h = draw(st.integers(1, 32))
    w = draw(st.integers(1, 32))
    kh = draw(st.integers(1, min(h, 10)))
    kw = draw(st.integers(1, min(w, 10)))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), (kh, kw)


@SETTINGS
@given(case=blur_case(), seed=st.integers(0, 2**20))
def test_blur_adjoint(case: tuple[tuple[int, int, int, int], tuple[int, int]], seed: int) -> None:
    shape, kshape = case
    kernel = np.random.default_rng(seed).standard_normal(kshape)  # any real kernel, odd/even
    _check_adjoint(Blur(kernel), shape, seed)


@st.composite
def down_case(draw: st.DrawFn) -> tuple[int, str, tuple[int, int, int, int]]:
    f = draw(st.sampled_from([2, 4, 8]))
    kind = draw(st.sampled_from(["lanczos2", "bicubic"]))
    h = f * draw(st.integers(1, 32 // f))
    w = f * draw(st.integers(1, 32 // f))
    return f, kind, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)


@SETTINGS
@given(case=down_case(), seed=st.integers(0, 2**20))
def test_downsample_adjoint(case: tuple[int, str, tuple[int, int, int, int]], seed: int) -> None:
    f, kind, shape = case
    _check_adjoint(Downsample(f, kind), shape, seed)


@SETTINGS
@given(case=down_case(), seed=st.integers(0, 2**20))
def test_downsample_adjoint_equals_autograd_vjp(
    case: tuple[int, str, tuple[int, int, int, int]], seed: int
) -> None:
    f, kind, shape = case
    op = Downsample(f, kind)
    x = _randn(seed, *shape).requires_grad_(True)
    y = _randn(seed + 1, shape[0], shape[1], shape[2] // f, shape[3] // f)
    (g,) = torch.autograd.grad(op(x), x, grad_outputs=y)
    torch.testing.assert_close(op.adjoint(y), g, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(shape=shape_st, per_channel=st.booleans(), seed=st.integers(0, 2**20))
def test_mask_adjoint_and_idempotent(
    shape: tuple[int, int, int, int], per_channel: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mshape = shape[1:] if per_channel else shape[2:]
    m = rng.random(mshape) < 0.5
    op = Mask(m)
    _check_adjoint(op, shape, seed)
    x = _randn(seed, *shape)
    hx = op(x)
    torch.testing.assert_close(op(hx), hx, rtol=0, atol=0)
    mt = torch.from_numpy(m.astype(np.float64))
    torch.testing.assert_close(hx, x * mt, rtol=0, atol=0)


@SETTINGS
@given(
    f=st.sampled_from([2, 4, 8]),
    kind=st.sampled_from(["lanczos2", "bicubic"]),
    ksize=st.integers(1, 8),
    seed=st.integers(0, 2**20),
)
def test_composition_adjoint(f: int, kind: str, ksize: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 16 if f < 8 else 32, 8 * int(rng.integers(2, 5))
    blur = Blur(rng.random((ksize, ksize + 1)))
    _check_adjoint(Downsample(f, kind) @ blur, (1, 3, h, w), seed)
    mask = Mask(rng.random((h, w)) < 0.7)
    _check_adjoint(mask @ blur, (2, 2, h, w), seed)
    _check_adjoint(Compose(Downsample(f, kind), mask, blur), (1, 1, h, w), seed)


# ----------------------------------------------------------------------------- shapes / order


@SETTINGS
@given(case=down_case())
def test_output_and_input_shapes(case: tuple[int, str, tuple[int, int, int, int]]) -> None:
    f, kind, shape = case
    n, c, h, w = shape
    x = torch.zeros(shape, dtype=DT)
    d = Downsample(f, kind)
    assert d(x).shape == (n, c, h // f, w // f)
    assert d.output_shape((h, w)) == (h // f, w // f)
    assert d.input_shape((h // f, w // f)) == (h, w)
    blur = Blur(np.ones((1, 1)))
    comp = d @ blur
    assert comp(x).shape == (n, c, h // f, w // f)
    assert comp.output_shape((h, w)) == (h // f, w // f)
    assert comp.input_shape((h // f, w // f)) == (h, w)
    for op in (Identity(), blur, Mask(np.ones((h, w)))):
        assert op(x).shape == x.shape
        assert op.output_shape((h, w)) == (h, w)


def test_matmul_applies_right_operand_first() -> None:
    x = _randn(0, 1, 2, 16, 16)
    rng = np.random.default_rng(0)
    blur = Blur(rng.random((3, 5)))
    mask = Mask(rng.random((16, 16)) < 0.5)
    down = Downsample(2)
    torch.testing.assert_close((down @ blur)(x), down(blur(x)))
    torch.testing.assert_close((blur @ mask)(x), blur(mask(x)))
    assert not torch.allclose((blur @ mask)(x), (mask @ blur)(x))
    # nested compositions flatten and keep the order
    comp = down @ (blur @ mask)
    assert isinstance(comp, Compose) and len(comp.ops) == 3
    torch.testing.assert_close(comp(x), down(blur(mask(x))))
    torch.testing.assert_close(
        comp.adjoint(x[..., :8, :8]), mask.adjoint(blur.adjoint(down.adjoint(x[..., :8, :8])))
    )


def test_describe_is_json_serialisable() -> None:
    ops = [
        Identity(),
        Blur(named_kernel("gauss25"), label="gauss25"),
        Downsample(4),
        Downsample(8, "bicubic"),
        Mask(np.ones((4, 4), dtype=bool)),
    ]
    ops.append(Compose(ops[2], ops[1]))
    for op in ops:
        d = json.loads(json.dumps(op.describe()))
        assert d["name"] == op.name
    assert ops[1].describe()["kernel_shape"] == [25, 25]
    assert ops[1].describe()["label"] == "gauss25"
    assert ops[2].describe()["kernel_shape"] == [16, 16]
    assert [o["name"] for o in ops[-1].describe()["ops"]] == ["downsample", "blur"]
    assert ops[4].describe()["known_fraction"] == 1.0


def test_non_4d_input_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Blur(np.ones((1, 1)))(torch.zeros(3, 8, 8, dtype=DT))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Downsample(2)(torch.zeros(8, 8, dtype=DT))


# ----------------------------------------------------------------------------- Blur


@SETTINGS
@given(
    h=st.integers(1, 32),
    w=st.integers(1, 32),
    kh=st.integers(1, 8),
    kw=st.integers(1, 8),
    seed=st.integers(0, 2**20),
)
def test_blur_delta_is_identity(h: int, w: int, kh: int, kw: int, seed: int) -> None:
    kh, kw = min(kh, h), min(kw, w)
    k = np.zeros((kh, kw))
    k[kh // 2, kw // 2] = 1.0
    x = _randn(seed, 2, 3, h, w)
    op = Blur(k)
    torch.testing.assert_close(op(x), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.adjoint(x), x, rtol=0, atol=1e-12)


@SETTINGS
@given(
    h=st.integers(4, 20),
    w=st.integers(4, 20),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    seed=st.integers(0, 2**20),
)
def test_blur_matches_direct_circular_convolution(
    h: int, w: int, kh: int, kw: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    k = rng.random((kh, kw))  # asymmetric: distinguishes convolution from correlation
    x = rng.random((h, w))
    got = Blur(k)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, _naive_circular_conv(x, k), atol=1e-12)


def test_blur_shifted_delta_shifts_image() -> None:
    k = np.zeros((3, 3))
    k[2, 1] = 1.0  # one row below the centre: output row i takes input row i - 1
    x = _randn(3, 1, 1, 6, 5)
    torch.testing.assert_close(Blur(k)(x), torch.roll(x, shifts=1, dims=-2), rtol=0, atol=1e-12)


def test_blur_kernel_larger_than_image_raises() -> None:
    op = Blur(np.ones((9, 9)) / 81)
    with pytest.raises(ValueError, match=r"kernel is 9x9 but the image is only 8x16"):
        op(torch.zeros(1, 1, 8, 16, dtype=DT))


def test_blur_float32_and_cache() -> None:
    op = Blur(named_kernel("uniform9"))
    x32 = torch.rand(1, 3, 16, 16)
    y32 = op(x32)
    assert y32.dtype == torch.float32
    y64 = op(x32.to(DT))
    assert y64.dtype == DT
    torch.testing.assert_close(y32.to(DT), y64, rtol=0, atol=1e-5)
    assert len(op._cache) == 2  # one transfer function per (H, W, device, dtype)
    op(x32)
    assert len(op._cache) == 2


def test_blur_rejects_bad_kernel() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Blur(np.ones(5))
    with pytest.raises(ValueError, match="non-finite"):
        Blur(np.array([[1.0, np.nan]]))


# ----------------------------------------------------------------------------- kernels


def test_named_kernels() -> None:
    u = named_kernel("uniform9")
    assert u.shape == (9, 9)
    np.testing.assert_allclose(u, 1.0 / 81.0)
    g = named_kernel("gauss25")
    assert g.shape == (25, 25)
    assert abs(g.sum() - 1.0) < 1e-12 and abs(u.sum() - 1.0) < 1e-12
    assert np.unravel_index(np.argmax(g), g.shape) == (12, 12)
    assert g[12, 12] > g[12, 13] > g[12, 14]
    np.testing.assert_allclose(g, g.T)
    # std 1.6: ratio of neighbouring values on the axis
    assert g[12, 13] / g[12, 12] == pytest.approx(np.exp(-1 / (2 * 1.6**2)))
    with pytest.raises(ValueError, match="uniform9, gauss25"):
        named_kernel("box")


def test_load_kernel_npy_txt_csv_png(tmp_path: pytest.TempPathFactory) -> None:
    k = np.arange(1.0, 7.0).reshape(2, 3)
    expected = k / k.sum()
    np.save(tmp_path / "k.npy", k)
    (tmp_path / "k.txt").write_text("# a comment\n1 2  3\n4\t5 6\n\n")
    (tmp_path / "k.csv").write_text("1,2,3\n4, 5, 6\n")
    for name in ("k.npy", "k.txt", "k.csv"):
        np.testing.assert_allclose(load_kernel(tmp_path / name), expected, atol=1e-15)
    gray = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    np.testing.assert_allclose(load_kernel(tmp_path / "g.png"), gray / gray.sum(), atol=1e-15)
    rgb = np.stack([gray, gray // 2 * 2, np.zeros_like(gray)], axis=-1)
    iio.imwrite(tmp_path / "c.png", rgb)
    mean = rgb.astype(float).mean(axis=-1)
    np.testing.assert_allclose(load_kernel(str(tmp_path / "c.png")), mean / mean.sum(), atol=1e-15)


def test_load_kernel_clips_negative_entries(tmp_path: pytest.TempPathFactory) -> None:
    np.save(tmp_path / "k.npy", np.array([[-1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(load_kernel(tmp_path / "k.npy"), [[0.0, 0.4, 0.6]])


@pytest.mark.parametrize(
    ("fname", "content", "message"),
    [
        ("empty.npy", np.zeros((0, 3)), "is empty"),
        ("cube.npy", np.ones((2, 2, 2)), "not 2-D"),
        ("vec.npy", np.ones(4), "not 2-D"),
        ("nan.npy", np.array([[1.0, np.nan]]), "non-finite"),
        ("neg.npy", -np.ones((3, 3)), "sums to"),
        ("zero.npy", np.zeros((3, 3)), "sums to"),
        ("empty.txt", "# nothing\n", "is empty"),
        ("ragged.txt", "1 2\n3\n", "cannot read"),
        ("words.csv", "a,b\n", "cannot read"),
        pytest.param(
            "notpng.png",
            "not an image",
            "cannot read",
            # imageio tries its other plugins on an unreadable file; one warns on import
            marks=pytest.mark.filterwarnings("ignore::DeprecationWarning"),
        ),
    ],
)
def test_load_kernel_errors(
    tmp_path: pytest.TempPathFactory, fname: str, content: object, message: str
) -> None:
    path = tmp_path / fname
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
    with pytest.raises(ValueError, match=message) as info:
        load_kernel(path)
    text = str(info.value)
    assert fname in text and "\n" not in text


def test_load_kernel_missing_file(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_kernel(tmp_path / "nope.npy")


# ----------------------------------------------------------------------------- Downsample


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos2_kernel_matches_dip_reference(factor: int) -> None:
    k = lanczos2_kernel(factor)
    assert k.shape == (4 * factor, 4 * factor)
    np.testing.assert_allclose(k, _dip_lanczos2_reference(factor), rtol=0, atol=1e-15)
    assert Downsample(factor).pad == 3 * factor // 2


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_kernel_properties(factor: int) -> None:
    k = bicubic_kernel(factor)
    assert k.shape == (4 * factor, 4 * factor)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k.min() < 0  # cubic with a = -0.5 has negative lobes
    c = 2 * factor
    assert k[c, c] == k.max()


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_downsample_matches_pil_in_interior(factor: int) -> None:
    """Away from the borders (2 LR pixels) the filter is PIL's antialiased bicubic (a = -0.5)."""
    from PIL import Image

    x = np.random.default_rng(factor).random((64, 48)).astype(np.float32)
    pil = np.asarray(Image.fromarray(x).resize((48 // factor, 64 // factor), Image.BICUBIC))
    ours = Downsample(factor, "bicubic")(torch.from_numpy(x.astype(np.float64))[None, None])
    np.testing.assert_allclose(ours[0, 0].numpy()[2:-2, 2:-2], pil[2:-2, 2:-2], atol=1e-6)


@pytest.mark.parametrize("kind", ["lanczos2", "bicubic"])
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsample_matches_replicate_pad_conv(factor: int, kind: str) -> None:
    x = _randn(5, 2, 3, 32, 16)
    op = Downsample(factor, kind)
    ker = torch.from_numpy(op.kernel).expand(3, 1, 4 * factor, 4 * factor)
    pad = (4 * factor - factor) // 2
    ref = F.conv2d(F.pad(x, (pad,) * 4, mode="replicate"), ker, stride=factor, groups=3)
    torch.testing.assert_close(op(x), ref, rtol=0, atol=1e-13)


@SETTINGS
@given(case=down_case(), value=st.floats(-10, 10, allow_nan=False))
def test_downsample_constant_image(
    case: tuple[int, str, tuple[int, int, int, int]], value: float
) -> None:
    f, kind, shape = case
    x = torch.full(shape, value, dtype=DT)
    y = Downsample(f, kind)(x)
    torch.testing.assert_close(y, torch.full_like(y, value), rtol=0, atol=1e-12 * (1 + abs(value)))


@pytest.mark.parametrize("factor", [0, 1, 3, 5, 16, 2.0, "4", True])
def test_downsample_wrong_factor(factor: object) -> None:
    with pytest.raises(ValueError, match="factor must be 2, 4 or 8"):
        Downsample(factor)  # type: ignore[arg-type]


@pytest.mark.parametrize("factor", [0, 3, 2.0, None, True])
def test_check_sr_factor_rejects(factor: object) -> None:
    with pytest.raises(ValueError, match=r"^factor must be 2, 4 or 8 \(got "):
        check_sr_factor(factor)


def test_check_sr_factor_accepts_every_factor() -> None:
    assert FACTORS == (2, 4, 8)
    for f in FACTORS:
        assert check_sr_factor(np.int64(f)) == f and type(check_sr_factor(np.int64(f))) is int


def test_downsample_wrong_kind_and_size() -> None:
    with pytest.raises(ValueError, match="lanczos2, bicubic"):
        Downsample(2, "nearest")
    with pytest.raises(ValueError, match="multiples of 4"):
        Downsample(4)(torch.zeros(1, 1, 16, 18, dtype=DT))
    with pytest.raises(ValueError, match="multiples of 8"):
        Downsample(8).output_shape((20, 16))


# ----------------------------------------------------------------------------- Mask


def test_mask_validation() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        Mask(np.array([[0.0, 0.5], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        Mask(np.ones(4))
    m = Mask(torch.tensor([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="mask is 2x2 but the image is 3x2"):
        m(torch.zeros(1, 1, 3, 2, dtype=DT))
    with pytest.raises(ValueError, match="3 channels but the image has 1"):
        Mask(np.ones((3, 2, 2)))(torch.zeros(1, 1, 2, 2, dtype=DT))


# ----------------------------------------------------------------------------- gradients


def _ops_for_grad() -> list[LinearOperator]:
    rng = np.random.default_rng(1)
    blur = Blur(rng.random((5, 4)))
    mask = Mask(rng.random((3, 16, 16)) < 0.5)
    return [Identity(), blur, Downsample(4), Downsample(2, "bicubic"), mask, Downsample(2) @ blur]


@pytest.mark.parametrize("op", _ops_for_grad(), ids=lambda o: o.name)
def test_gradient_is_adjoint_of_residual(op: LinearOperator) -> None:
    x = _randn(7, 1, 3, 16, 16).requires_grad_(True)
    y = _randn(8, *op(x).shape)
    loss = 0.5 * ((op(x) - y) ** 2).sum()
    loss.backward()
    assert x.grad is not None
    expected = op.adjoint(op(x.detach()) - y)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-10)
