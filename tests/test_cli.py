import csv
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from tiny_problems import DEVICE_NAME, ON_CPU

FAST = ("--iters", "3", "--set", "log_every=1")


def test_denoise_writes_image_log_and_manifest(run_cli, tiny_images, tmp_path):
    out = tmp_path / "out"
    result = run_cli("denoise", tiny_images["noisy"], "--reference", tiny_images["clean"],
                     "-o", out, "--quiet", *FAST)
    assert result.code == 0, result.err
    image = out / "noisy_deepred.png"
    restored = iio.imread(image)
    assert restored.shape == (16, 16, 3) and restored.dtype == np.uint8
    with open(out / "noisy_deepred.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == ["iteration", "loss", "psnr", "gap", "seconds"]
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert all(float(r["psnr"]) > 0 and float(r["gap"]) >= 0 for r in rows)
    manifest = json.loads((out / "noisy_deepred.json").read_text())
    assert manifest["method"] == "deepred" and manifest["task"] == "denoise"
    assert manifest["preset"] == "denoise" and manifest["iterations"] == 3
    assert manifest["parameters"]["lam"] == 0.5 and manifest["parameters"]["iterations"] == 3
    assert manifest["seed"] == 0 and manifest["device"] == DEVICE_NAME
    assert manifest["psnr"] == pytest.approx(float(rows[-1]["psnr"]), abs=0.05)
    assert manifest["psnr_input"] < 25 and manifest["versions"]["torch"]
    # the preset's denoiser lags one period as the authors' thread: no call in 3 iterations
    assert manifest["parameters"]["denoiser_lag"] is True
    # --denoiser auto: the preset's NLM, in torch on CUDA
    assert manifest["denoiser"] == ("nlm" if ON_CPU else "nlm-torch")
    assert manifest["denoiser_calls"] == 0
    assert [float(r["lam"]) for r in rows] == [0.5, 0.5, 0.5]  # PSNR(T, y) < 20 dB: no growth


def test_psnr_column_is_empty_without_reference(run_cli, tiny_images, tmp_path):
    result = run_cli("denoise", tiny_images["noisy"], "-o", tmp_path, "-m", "dip", "-q", *FAST)
    assert result.code == 0, result.err
    rows = list(csv.DictReader((tmp_path / "noisy_dip.csv").read_text().splitlines()))
    assert rows and all(r["psnr"] == "" and r["gap"] == "" for r in rows)
    manifest = json.loads((tmp_path / "noisy_dip.json").read_text())
    assert manifest["psnr"] is None


def test_json_prints_one_manifest_per_image(run_cli, tiny_images, tmp_path):
    result = run_cli("denoise", tiny_images["noisy"], tiny_images["grey"], "-o", tmp_path,
                     "--json", "-m", "nlm")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    manifests = [json.loads(line) for line in lines]
    assert [Path(m["input"]).name for m in manifests] == ["noisy.png", "grey.png"]
    assert all(m["method"] == "nlm" for m in manifests)


@pytest.mark.parametrize(("key", "shape"), [("grey", (16, 16)), ("jpeg", (16, 16, 3))])
def test_output_keeps_the_channels(run_cli, tiny_images, tmp_path, key, shape):
    result = run_cli("denoise", tiny_images[key], "-o", tmp_path, "-q", *FAST)
    assert result.code == 0, result.err
    (image,) = tmp_path.glob("*_deepred.png")
    assert iio.imread(image).shape == shape
    assert (tmp_path / f"{image.stem}_compare.png").exists()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sixteen_bit_input_gives_sixteen_bit_output(run_cli, tmp_path, channels):
    from deeprestore.arrays import Image
    from deeprestore.io.images import quantise, read_image
    from deeprestore.io.writers import write_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (12, 12, channels), dtype=np.uint16)
    alpha = pixels[:, :, 3] / 65535.0 if channels == 4 else None
    src = tmp_path / "deep.png"
    write_image(src, Image(pixels[:, :, : min(channels, 3)] / 65535.0, 16, alpha))
    assert np.array_equal(quantise(read_image(src)).reshape(pixels.shape), pixels)
    result = run_cli("denoise", src, "-o", tmp_path / "o", "-m", "nlm", "-q")
    assert result.code == 0, result.err
    restored = read_image(tmp_path / "o" / "deep_nlm.png")
    assert restored.bit_depth == 16 and restored.channels == min(channels, 3)
    if channels == 4:  # alpha is carried through untouched
        assert restored.alpha is not None
        assert np.array_equal(np.round(restored.alpha * 65535), pixels[:, :, 3])


def test_rgba_alpha_is_carried_through(run_cli, tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    src = tmp_path / "rgba.png"
    iio.imwrite(src, rgba)
    result = run_cli("denoise", src, "-o", tmp_path / "o", "-m", "nlm", "-q", "--no-compare")
    assert result.code == 0, result.err
    out = iio.imread(tmp_path / "o" / "rgba_nlm.png")
    assert out.shape == (16, 16, 4) and np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert not (tmp_path / "o" / "rgba_nlm_compare.png").exists()


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
def test_same_seed_same_files_other_seed_differs(run_cli, tiny_images, tmp_path):
    outs = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        result = run_cli("denoise", tiny_images["noisy"], "-o", tmp_path / name, "--seed", seed,
                         "-q", *FAST)
        assert result.code == 0, result.err
        outs.append((tmp_path / name / "noisy_deepred.png").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_existing_outputs_are_skipped_unless_overwrite(run_cli, tiny_images, tmp_path):
    assert run_cli("denoise", tiny_images["noisy"], "-o", tmp_path, "-m", "nlm").code == 0
    image = tmp_path / "noisy_nlm.png"
    image.write_bytes(b"sentinel")
    again = run_cli("denoise", tiny_images["noisy"], "-o", tmp_path, "-m", "nlm")
    assert again.code == 0 and "skipped" in again.err
    assert image.read_bytes() == b"sentinel"
    forced = run_cli("denoise", tiny_images["noisy"], "-o", tmp_path, "-m", "nlm", "--overwrite")
    assert forced.code == 0 and image.read_bytes() != b"sentinel"


def test_one_bad_input_fails_and_the_others_still_run(run_cli, tiny_images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    result = run_cli("denoise", broken, tiny_images["noisy"], "-o", tmp_path / "o", "-m", "nlm",
                     "--sigma", "25")
    assert result.code == 1
    assert "broken.png" in result.err and len(result.err.strip().splitlines()) == 1
    assert (tmp_path / "o" / "noisy_nlm.png").exists()
    assert [p.name for p in (tmp_path / "o").glob("broken*")] == ["broken_nlm.failed.json"]


def test_console_script_help_and_exit_code(tiny_images, tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "deeprestore", "denoise", "--help"],
                               capture_output=True, text=True)
    assert help_text.returncode == 0 and "--method" in help_text.stdout
    bad = subprocess.run([sys.executable, "-m", "deeprestore", "denoise", str(tiny_images["noisy"]),
                          "--method", "magic"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.cpu_only(reason="the warning is about a CPU's bf16 arithmetic")
def test_bf16_on_a_cpu_without_bf16_arithmetic_warns_once_and_float32_does_not(
        run_cli, tiny_images, tmp_path, monkeypatch):
    import deeprestore.execution as execution

    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: False)
    args = ("denoise", tiny_images["noisy"], "--method", "dip", "--iters", "1", "--sigma", "25")
    slow = run_cli(*args, "-o", tmp_path / "a", "--precision", "bf16")
    assert slow.code == 0, slow.err
    assert slow.err.count("warning: --precision bf16 on this CPU") == 1
    plain = run_cli(*args, "-o", tmp_path / "b")
    assert plain.code == 0 and "warning: --precision bf16" not in plain.err


@pytest.mark.cpu_only(reason="the warning is about a CPU's bf16 arithmetic")
def test_bf16_on_a_cpu_with_bf16_arithmetic_does_not_warn(run_cli, tiny_images, tmp_path,
                                                          monkeypatch):
    import deeprestore.execution as execution

    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: True)
    done = run_cli("denoise", tiny_images["noisy"], "--method", "dip", "--iters", "1",
                   "--sigma", "25", "-o", tmp_path, "--precision", "bf16")
    assert done.code == 0, done.err
    assert "warning: --precision bf16" not in done.err


def test_cpu_bf16_capability_follows_torchs_cpu_feature_checks(monkeypatch):
    import torch

    from deeprestore.execution import cpu_has_native_bf16

    for avx512_bf16, amx in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert cpu_has_native_bf16() is (avx512_bf16 or amx)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert cpu_has_native_bf16() is False  # a torch without the checks: assume none


def test_sigterm_outside_a_run_exits_143_with_one_line(run_cli, tiny_images, tmp_path,
                                                       monkeypatch):
    import signal

    import deeprestore.cli.restore as restore_commands
    from deeprestore.cli.app import raise_terminated

    def stopped_while_loading(*args, **kwargs):
        raise_terminated(signal.SIGTERM, None)  # what the SIGTERM handler does

    monkeypatch.setattr(restore_commands, "run_restore", stopped_while_loading)
    result = run_cli("denoise", tiny_images["noisy"], "-o", tmp_path / "out")
    assert result.code == 143
    assert result.err.strip() == "deeprestore: terminated"
    assert not (tmp_path / "out").exists()


def test_help_texts_keep_their_brackets():
    """Typer's help is rich markup: a literal ``[word]`` in an option's help (a preset's
    ``[everyday]`` table) vanished as an unknown tag (issue 45, item 7). Every bracketed word
    of every command's option help reaches the rendered ``--help``."""
    import re

    import typer
    from typer.testing import CliRunner

    from deeprestore.cli.app import app

    group = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        rendered = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output
        for param in command.params:
            for word in re.findall(r"\[([a-z][a-z0-9_-]*)\]", getattr(param, "help", "") or ""):
                assert f"[{word}]" in rendered, (name, param.name, word)
                checked += 1
    assert checked >= 4  # the restore commands' --preset at least
