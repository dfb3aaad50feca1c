"""Fuzzing the loaders: random bytes, random arrays and random presets give a valid result or
the loader's own one-line error — never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deeprestore.arrays import Image, ImageError, from_array
from deeprestore.config.presets import PresetError, load_preset
from deeprestore.config.settings import SettingsError
from deeprestore.io.images import read_image

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _one_line(err: Exception) -> None:
    text = str(err)
    assert text and "\n" not in text


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp",
                                                              ".webp"]),
       png_like=st.booleans())
def test_random_bytes_never_crash_the_image_reader(data, suffix, png_like):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes((PNG_HEADER if png_like else b"") + data)
        try:
            image = read_image(path)
        except ImageError as err:
            _one_line(err)
        else:
            assert isinstance(image, Image) and image.pixels.ndim == 3


DTYPES = ["uint8", "uint16", "int32", "float32", "float64", "bool", "complex64", "int8"]


@FUZZ
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16), special=st.booleans())
def test_random_arrays_are_images_or_clean_errors(shape, dtype, seed, special):
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) * 300 - 20).astype(dtype)
    if special and array.size and np.issubdtype(array.dtype, np.floating):
        array.flat[0] = np.nan
    try:
        image = from_array(array)
    except ImageError as err:
        _one_line(err)
    else:
        assert image.pixels.ndim == 3 and image.pixels.shape[2] in (1, 3)
        assert np.isfinite(image.pixels).all()
        assert image.pixels.min() >= 0 and image.pixels.max() <= 1


KEYS = ["name", "task", "description", "iterations", "lr", "lam", "mu", "sigma_f", "denoiser",
        "method", "runs", "seed", "ema", "sigma", "kernel", "factor", "bogus", "denoise_every"]
values = st.one_of(st.integers(-5, 10_000), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.text(max_size=8),
                   st.sampled_from(["denoise", "deblur", "nlm", "bm3d", "deepred", "dip"]),
                   st.lists(st.integers(0, 3), max_size=3))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@FUZZ
@given(top=tables, sections=st.dictionaries(
    st.sampled_from(["degradation", "defaults", "methods.deepred", "methods.dip", "methods.x",
                     "other"]), tables, max_size=4), garbage=st.text(max_size=20),
       add_garbage=st.booleans())
@example(top={"task": []}, sections={}, garbage="", add_garbage=False)  # once a TypeError
@example(top={"task": 3}, sections={}, garbage="", add_garbage=False)
def test_random_presets_load_or_fail_cleanly(top, sections, garbage, add_garbage):
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    if add_garbage:
        lines.append(garbage)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            preset = load_preset(path)
            for method in preset.methods:
                preset.settings_for(method).validate()
        except (PresetError, SettingsError) as err:
            _one_line(err)
