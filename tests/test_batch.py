"""Batches: directories, globs, --recursive, --shard, reruns that skip finished work, summary."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tiny_problems import DEVICE_NAME

from deeprestore.arrays import Image
from deeprestore.io.inputs import InputFile, collect_inputs, parse_max_pixels, select_shard
from deeprestore.io.writers import write_image

FAST = ("-m", "nlm", "--no-compare", "-q")


def _batch(folder: Path, good: int = 5, corrupt: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(good):
        path = folder / f"good{i}.png"
        write_image(path, Image(rng.random((16, 16, 3))))
        paths.append(path)
    for i in range(corrupt):
        path = folder / f"bad{i}.png"
        path.write_bytes(paths[0].read_bytes()[: 40 + 20 * i] if paths else b"x")
        paths.append(path)
    return paths


def test_batch_with_corrupt_files_restores_the_good_reports_the_bad_and_resumes(
        run_cli, tmp_path):
    _batch(tmp_path / "in")
    out = tmp_path / "out"
    result = run_cli("denoise", tmp_path / "in", "-o", out, *FAST)
    assert result.code == 1
    errors = result.err.strip().splitlines()
    assert len(errors) == 2 and all("bad" in line and "error" in line for line in errors)
    restored = sorted(p.name for p in out.glob("*_nlm.png"))
    assert restored == [f"good{i}_nlm.png" for i in range(5)]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("good*")}

    summary = run_cli("summary", out)
    assert summary.code == 1
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert sorted((Path(r["input"]).name, r["status"]) for r in rows) == sorted(
        [(f"good{i}.png", "done") for i in range(5)] + [("bad0.png", "failed"),
                                                        ("bad1.png", "failed")])
    assert all(r["error"] for r in rows if r["status"] == "failed")

    again = run_cli("denoise", tmp_path / "in", "-o", out, "-m", "nlm", "--no-compare")
    assert again.code == 1
    assert again.err.count("skipped") == 5 and again.err.count("error") == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("good*")} == stamps


def test_a_fixed_image_clears_its_failure_record(run_cli, tmp_path):
    paths = _batch(tmp_path / "in", good=1, corrupt=1)
    out = tmp_path / "out"
    assert run_cli("denoise", tmp_path / "in", "-o", out, *FAST).code == 1
    assert (out / "bad0_nlm.failed.json").exists()
    paths[1].write_bytes(paths[0].read_bytes())
    assert run_cli("denoise", tmp_path / "in", "-o", out, *FAST).code == 0
    assert not (out / "bad0_nlm.failed.json").exists() and (out / "bad0_nlm.png").exists()
    assert run_cli("summary", out, "-q").code == 0


def test_recursive_keeps_the_folder_layout(run_cli, tmp_path):
    _batch(tmp_path / "in", good=1, corrupt=0)
    _batch(tmp_path / "in" / "a" / "b", good=1, corrupt=0)
    out = tmp_path / "out"
    flat = run_cli("denoise", tmp_path / "in", "-o", out, *FAST)
    assert flat.code == 0 and not (out / "a").exists()
    deep = run_cli("denoise", tmp_path / "in", "-r", "-o", out, *FAST)
    assert deep.code == 0 and (out / "a" / "b" / "good0_nlm.png").exists()


def test_glob_patterns_are_expanded_and_sorted(tmp_path):
    paths = _batch(tmp_path, good=3, corrupt=0)
    (tmp_path / "notes.txt").write_text("not an image")
    found = collect_inputs([str(tmp_path / "good*")])
    assert [entry.path for entry in found] == sorted(paths)
    twice = collect_inputs([str(tmp_path / "good*"), paths[0]])
    assert len(twice) == 3  # a file named twice is processed once


@given(st.integers(0, 60), st.integers(1, 9))
def test_shards_cover_every_input_exactly_once(total, count):
    inputs = [InputFile(Path(f"img{i:03d}.png")) for i in range(total)]
    shards = [select_shard(inputs, index, count) for index in range(count)]
    merged = [entry for shard in shards for entry in shard]
    assert sorted(merged, key=lambda e: e.path) == inputs
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_shard_option_splits_a_batch(run_cli, tmp_path):
    _batch(tmp_path / "in", good=5, corrupt=0)
    outs = []
    for index in (0, 1):
        out = tmp_path / f"out{index}"
        assert run_cli("denoise", tmp_path / "in", "--shard", f"{index}/2", "-o", out,
                       *FAST).code == 0
        outs.append({p.name for p in out.glob("*_nlm.png")})
    assert outs[0].isdisjoint(outs[1])
    assert outs[0] | outs[1] == {f"good{i}_nlm.png" for i in range(5)}
    assert len(outs[0]) == 3 and len(outs[1]) == 2


@pytest.mark.parametrize(("text", "value"), [("4096x4096", 4096 * 4096), ("16M", 16_000_000),
                                             ("100", 100), ("20×10", 200)])
def test_max_pixels_forms(text, value):
    assert parse_max_pixels(text) == value


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_mid_run_exits_cleanly_and_keeps_finished_images(tmp_path, signal_name, code):
    import os
    import signal
    import subprocess
    import sys
    import time

    _batch(tmp_path / "in", good=2, corrupt=0)
    out = tmp_path / "out"
    # good0 is done before; good1 then runs a long DIP that the signal interrupts
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deeprestore", "denoise", "-o", str(out), "-m", "dip",
               "--no-compare", "-q", "--device", DEVICE_NAME]
    first = subprocess.run([*command, str(tmp_path / "in" / "good0.png"), "--iters", "1"],
                           check=False, env=env)
    assert first.returncode == 0
    # --checkpoint-every 1: good1's checkpoint appears after its first iteration, so the signal
    # lands mid-run however long the imports take on a busy machine
    process = subprocess.Popen([*command, str(tmp_path / "in"), "--iters", "100000",
                                "--checkpoint-every", "1"],
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out / "good1_dip.ckpt").exists() and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before the signal"
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    word = "interrupted" if signal_name == "SIGINT" else "terminated"
    assert err.strip().splitlines()[-1].startswith(f"deeprestore: {word}; checkpoint saved to")
    assert sorted(p.name for p in out.iterdir()) == ["good0_dip.csv", "good0_dip.json",
                                                     "good0_dip.png", "good1_dip.ckpt"]


@pytest.mark.parametrize("delay", [0.3, 0.8])  # inside numpy/scipy's import, inside torch's
@pytest.mark.parametrize(("signal_name", "code", "word"),
                         [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_while_the_libraries_load_is_one_line(tmp_path, signal_name, code, word, delay):
    import os
    import signal
    import subprocess
    import sys
    import time

    _batch(tmp_path / "in", good=1, corrupt=0)
    process = subprocess.Popen([sys.executable, "-m", "deeprestore", "denoise", "-o",
                                str(tmp_path / "out"), "-m", "dip", "-q", "--device",
                                DEVICE_NAME, str(tmp_path / "in")],
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(delay)  # loading takes longer than this (about 1.5 s idle; torch alone > 1 s)
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert err.strip() == f"deeprestore: {word}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
