"""Checkpoints, resume and NaN rollback."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_problems import restore

from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.io.writers import write_image
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem
from deeprestore.solvers.control import RunControl
from deeprestore.solvers.network import NetworkAlgorithm


def _problem(size: int = 16) -> Problem:
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, size, size, generator=gen)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return Problem(y=noisy, operator=Identity(), x_init=noisy, sigma=25.0)


def _settings(**changes) -> Settings:
    base = dict(method="deepred", iterations=30, log_every=5, net_channels=8, skip_channels=2,
                denoise_every=3, seed=1)
    base.update(changes)
    return Settings(**base).validate()


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_resuming_a_saved_state_gives_the_same_result_bit_for_bit():
    problem = _problem()
    full = restore(problem, _settings())
    saved: list[dict] = []
    restore(problem, _settings(), control=RunControl(checkpoint=saved.append,
                                                     checkpoint_every=10))
    assert [s["algorithm"]["iteration"] for s in saved] == [10, 20]
    resumed = restore(problem, _settings(), control=RunControl(resume=saved[0]))
    assert torch.equal(resumed.image, full.image)
    strip = [(r.iteration, r.loss, r.psnr, r.gap, r.denoiser_age) for r in full.log]
    assert [(r.iteration, r.loss, r.psnr, r.gap, r.denoiser_age) for r in resumed.log] == strip
    assert resumed.denoiser_calls == full.denoiser_calls


def test_a_nan_rolls_back_with_half_the_learning_rate(monkeypatch):
    real = NetworkAlgorithm.update
    poisoned = {"left": 1}

    def update(self):
        loss, gap = real(self)
        if self.iteration == 15 and poisoned["left"]:
            poisoned["left"] -= 1
            loss = loss * float("nan")
        return loss, gap

    monkeypatch.setattr(NetworkAlgorithm, "update", update)
    result = restore(_problem(), _settings(lr=0.01), control=RunControl(snapshot_every=5))
    assert result.rollbacks == [{"at": 15, "back_to": 10, "lr": pytest.approx(0.005)}]
    assert [r.iteration for r in result.log] == [5, 10, 15, 20, 25, 30]
    assert torch.isfinite(result.image).all()


def test_a_run_that_keeps_diverging_fails_after_three_rollbacks(monkeypatch):
    real = NetworkAlgorithm.update

    def update(self):
        loss, gap = real(self)
        return (loss * float("nan"), gap) if self.iteration >= 7 else (loss, gap)

    monkeypatch.setattr(NetworkAlgorithm, "update", update)
    with pytest.raises(FloatingPointError, match="after 3 rollbacks"):
        restore(_problem(), _settings())  # rolls back to the start (snapshot_every = 100)


def _rows(path: Path) -> list[list[str]]:
    """The CSV without its wall-clock column."""
    rows = list(csv.reader(path.read_text().splitlines()))
    drop = rows[0].index("seconds")
    return [row[:drop] + row[drop + 1:] for row in rows]


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_ctrl_c_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path):
    image = tmp_path / "in.png"
    write_image(image, Image(np.random.default_rng(0).random((24, 24, 3))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "deeprestore", "denoise", str(image), "-m", "deepred",
            "--iters", "60", "--set", "log_every=1", "--seed", "3", "-q", "--no-compare",
            "--device", "cpu", "--precision", "float32"]  # auto's timing could differ per run
    whole = subprocess.run([*base, "-o", str(tmp_path / "a")], env=env, check=False)
    assert whole.returncode == 0

    out = tmp_path / "b"
    process = subprocess.Popen([*base, "-o", str(out), "--checkpoint-every", "5"], env=env,
                               stderr=subprocess.PIPE, text=True)
    checkpoint = out / "in_deepred.ckpt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "checkpoint saved to" in err and "--resume" in err
    assert checkpoint.exists() and not (out / "in_deepred.png").exists()

    resumed = subprocess.run([*base, "-o", str(out), "--resume"], env=env, check=False)
    assert resumed.returncode == 0
    assert (out / "in_deepred.png").read_bytes() == (tmp_path / "a" / "in_deepred.png").read_bytes()
    assert _rows(out / "in_deepred.csv") == _rows(tmp_path / "a" / "in_deepred.csv")
    manifest = json.loads((out / "in_deepred.json").read_text())
    assert 0 < manifest["resumed_from"] < 60 and not checkpoint.exists()


def test_resume_refuses_a_checkpoint_made_with_other_settings(run_cli, tmp_path):
    image = tmp_path / "in.png"
    write_image(image, Image(np.random.default_rng(0).random((16, 16, 3))))
    out = tmp_path / "out"
    args = ("denoise", image, "-m", "dip", "--iters", "4", "-q", "--no-compare", "-o", out)
    assert run_cli(*args, "--checkpoint-every", "2", "--set", "lr=0.02").code == 0
    assert not (out / "in_dip.ckpt").exists()  # removed when the run finished
    (out / "in_dip.ckpt").write_bytes(b"garbage")
    result = run_cli(*args, "--resume", "--overwrite")
    assert result.code == 1 and "cannot read the checkpoint" in result.err
