"""Every kind of bad input ends in one stderr line naming the problem, the right exit code
(2: usage, 1: a failed image), no traceback, and no restored output on disk.

An image that fails, or whose task does not fit it (no mask, a mask or a kernel of another
size: exit 2), leaves only its ``NAME_METHOD.failed.json`` record (for ``summary``); usage errors
are found before any work and leave nothing at all.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deeprestore.arrays import Image
from deeprestore.io.writers import write_image

FAST = ("-m", "nlm", "--no-compare", "-q")


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A 24×24 RGB PNG."""
    path = tmp_path / "good.png"
    write_image(path, Image(np.random.default_rng(0).random((24, 24, 3))))
    return path


def _outputs(folder: Path) -> list[str]:
    """Restored files under ``folder`` (failure records excluded)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.is_file()
                  and not p.name.endswith(".failed.json"))


def _check(result, code: int, needle: str, out: Path) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == code, result.err
    assert len(lines) == 1, result.err
    assert lines[0].startswith("deeprestore: error:"), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.err
    assert _outputs(out) == []


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ failed images: exit 1
def test_missing_file(run_cli, tmp_path):
    out = tmp_path / "out"
    _check(run_cli("denoise", tmp_path / "nope.png", "-o", out, *FAST), 1,
           "nope.png: no such file", out)


def test_empty_file(run_cli, tmp_path):
    out = tmp_path / "out"
    bad = _write_bytes(tmp_path / "empty.png", b"")
    _check(run_cli("denoise", bad, "-o", out, *FAST), 1, "empty", out)


def test_truncated_file(run_cli, tmp_path, good):
    out = tmp_path / "out"
    bad = _write_bytes(tmp_path / "cut.png", good.read_bytes()[:70])
    _check(run_cli("denoise", bad, "-o", out, *FAST), 1, "cut.png: cannot read", out)
    record = json.loads((out / "cut_nlm.failed.json").read_text())
    assert record["status"] == "failed" and "cut.png" in record["error"]


def test_not_an_image(run_cli, tmp_path):
    out = tmp_path / "out"
    bad = _write_bytes(tmp_path / "notes.png", b"these are my notes, not pixels\n" * 10)
    _check(run_cli("denoise", bad, "-o", out, *FAST), 1, "cannot read it as an image", out)


def test_image_of_size_zero(run_cli, tmp_path):
    import imageio.v3 as iio

    bad = tmp_path / "zero.tif"
    iio.imwrite(bad, np.zeros((0, 5), dtype=np.uint8))
    out = tmp_path / "out"
    _check(run_cli("denoise", bad, "-o", out, *FAST), 1, "zero.tif", out)


def test_image_smaller_than_8_pixels(run_cli, tmp_path):
    out = tmp_path / "out"
    small = tmp_path / "small.png"
    write_image(small, Image(np.zeros((5, 30, 3))))
    _check(run_cli("denoise", small, "-o", out, *FAST), 1, "small.png", out)


def test_image_larger_than_max_pixels(run_cli, tmp_path, good):
    out = tmp_path / "out"
    _check(run_cli("denoise", good, "-o", out, "--max-pixels", "20x20", *FAST), 1,
           "--max-pixels", out)
    result = run_cli("denoise", good, "-o", out, "--max-pixels", "24x24", *FAST)
    assert result.code == 0 and (out / "good_nlm.png").exists()


def test_output_equal_to_input_is_refused(run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "in_nlm.png"  # where restoring in.png with nlm into out/ writes
    write_image(target, Image(np.random.default_rng(1).random((24, 24, 3))))
    before = target.read_bytes()
    link = tmp_path / "in.png"
    link.symlink_to(target)  # the input *is* that output file
    result = run_cli("denoise", link, "-o", out, "--overwrite", *FAST)
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and "overwrite the input" in lines[0]
    assert target.read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".failed.json")) == [
        "in_nlm.png"]


def test_full_disk_leaves_nothing(run_cli, tmp_path, good, monkeypatch):
    import deeprestore.io.writers as writers

    calls = {"n": 0}
    real = writers.os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the image was written, the CSV hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(writers.os, "fsync", fsync)
    out = tmp_path / "out"
    result = run_cli("denoise", good, "-o", out, *FAST)
    assert result.code == 1 and "No space left" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert _outputs(out) == [] and not list(out.glob(".*.part"))


def test_unwritable_output_directory(run_cli, tmp_path, good):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    result = run_cli("denoise", good, "-o", blocker / "out", *FAST)
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and "file" in lines[0], result.err
    assert blocker.read_text().startswith("a file")


def test_nan_is_not_a_valid_pixel(run_cli, tmp_path):
    bad = tmp_path / "nan.tif"
    import imageio.v3 as iio

    iio.imwrite(bad, np.full((16, 16), math.nan, dtype=np.float32))
    out = tmp_path / "out"
    _check(run_cli("denoise", bad, "-o", out, *FAST), 1, "nan", out)


# ------------------------------------------------------------------ usage errors: exit 2
#: (command and options, what its one line must say): found before any work, nothing written,
#: not even the output folder
BAD_OPTIONS = [
    (("denoise", "--method", "magic"), "unknown method 'magic'"),
    (("denoise", "--denoiser", "wavelet"), "unknown denoiser 'wavelet'"),
    (("denoise", "--device", "tpu"), "unknown device 'tpu'"),
    (("denoise", "--preset", "nosuch"), "unknown preset 'nosuch'"),
    (("denoise", "--set", "lamda=1"), "unknown setting 'lamda'"),
    (("denoise", "--set", "iterations=x"), "setting 'iterations' in --set must be int"),
    (("denoise", "--set", "iterations=1.5"), "setting 'iterations' in --set must be int"),
    (("denoise", "--set", "novalue"), "--set expects KEY=VALUE"),
    *[(("denoise", "--sigma", sigma), "--sigma") for sigma in ("-3", "nan", "inf")],
    (("denoise", "--iters", "0"), "--iters"),
    (("denoise", "--max-pixels", "lots"), "--max-pixels"),
    *[(("denoise", "--shard", shard), "--shard") for shard in ("2/2", "1", "a/b", "-1/3")],
    (("denoise", "--bogus"), "No such option: --bogus"),
    (("deblur", "--kernel", "blurry"), "unknown kernel 'blurry'"),
    (("superres", "--factor", "3"), "factor must be 2, 4 or 8"),
    (("degrade", "--task", "superres", "--factor", "5"), "factor must be 2, 4 or 8"),
    (("degrade", "--task", "deblur", "--kernel", "nope"), "unknown kernel 'nope'"),
    (("degrade", "--task", "colourise"), "unknown task 'colourise'"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_OPTIONS,
                         ids=[" ".join(args) for args, _ in BAD_OPTIONS])
def test_a_bad_option_is_one_line_before_any_work(run_cli, tmp_path, good, args, needle):
    command, *options = args
    out = tmp_path / "out"
    _check(run_cli(command, good, "-o", out, *options), 2, needle, out)
    assert not out.exists()


def test_directory_with_no_images(run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    out = tmp_path / "out"
    _check(run_cli("denoise", empty, "-o", out, *FAST), 2, "has no images", out)


def test_glob_that_matches_nothing(run_cli, tmp_path):
    out = tmp_path / "out"
    _check(run_cli("denoise", str(tmp_path / "*.png"), "-o", out, *FAST), 2,
           "matches no images", out)


def test_preset_that_does_not_parse(run_cli, tmp_path, good):
    preset = tmp_path / "broken.toml"
    preset.write_text("name = 'broken'\ntask = denoise\n[[[")
    out = tmp_path / "out"
    _check(run_cli("denoise", good, "--preset", preset, "-o", out, *FAST), 2, "broken.toml", out)


def _preset_with(tmp_path: Path, line: str) -> Path:
    from deeprestore.config.presets import available_presets

    text = available_presets()["denoise"].read_text().replace("[methods.deepred]",
                                                      f"[methods.deepred]\n{line}")
    path = tmp_path / "edited.toml"
    path.write_text(text)
    return path


def test_unknown_preset_key(run_cli, tmp_path, good):
    out = tmp_path / "out"
    preset = _preset_with(tmp_path, "lamda = 0.3")
    _check(run_cli("denoise", good, "--preset", preset, "-o", out, "-q"), 2, "lamda", out)


def test_ill_typed_preset_key(run_cli, tmp_path, good):
    out = tmp_path / "out"
    preset = _preset_with(tmp_path, "iterations = 'many'")
    _check(run_cli("denoise", good, "--preset", preset, "-o", out, "-q"), 2, "iterations", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(run_cli, tmp_path, good):
    out = tmp_path / "out"
    _check(run_cli("denoise", good, "--device", "cuda", "-o", out, *FAST), 2, "cuda", out)


def test_missing_reference(run_cli, tmp_path, good):
    out = tmp_path / "out"
    _check(run_cli("denoise", good, "--reference", tmp_path / "ref.png", "-o", out, *FAST), 2,
           "ref.png", out)


def test_degrade_with_a_missing_mask_file(run_cli, tmp_path, good):
    out = tmp_path / "out"
    _check(run_cli("degrade", good, "--task", "inpaint", "--mask", tmp_path / "m.png", "-o",
                   out), 2, "m.png", out)


@pytest.mark.parametrize("command", [
    ("denoise", "{noisy}", "-m", "nlm"),
    ("degrade", "{noisy}", "--task", "denoise"),
    ("demo",),
    ("reproduce", "denoise", "--data", "{data}"),
])
def test_an_output_that_is_a_file_is_one_line_before_any_work(run_cli, tiny_images, tmp_path,
                                                              command):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"not a folder")
    args = [a.format(noisy=tiny_images["noisy"], data=tmp_path) for a in command]
    result = run_cli(*args, "-o", taken)
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines == [f"deeprestore: error: -o {taken}: is a file, not a folder (-o names the "
                     "folder the outputs go in)"]
    assert taken.read_bytes() == b"not a folder"


# ------------------------------------------ a task that does not fit the image: exit 2
@pytest.mark.parametrize(("command", "method", "options", "needle"), [
    ("inpaint", "biharmonic", (), "inpainting needs a mask"),
    ("inpaint", "biharmonic", ("--mask", "{mask}"), "mask is 10x10 but the image is 24x24"),
    ("deblur", "wiener", ("--kernel", "{kernel}"),
     "the blur kernel is 40x40 but the image is only 24x24"),
    ("deblur", "wiener", ("--kernel", "gauss25"),
     "the blur kernel is 25x25 but the image is only 24x24"),
])
def test_a_task_that_does_not_fit_the_image_fails_it_in_one_line(run_cli, tmp_path, good,
                                                                 command, method, options,
                                                                 needle):
    mask, kernel = tmp_path / "mask.png", tmp_path / "big.npy"
    write_image(mask, Image(np.ones((10, 10, 1))))
    np.save(kernel, np.ones((40, 40)))
    out = tmp_path / "out"
    result = run_cli(command, good, "-m", method, "-o", out, "-q", "--no-compare",
                     *(option.format(mask=mask, kernel=kernel) for option in options))
    _check(result, 2, needle, out)
    assert [p.name for p in out.iterdir()] == [f"good_{method}.failed.json"]
