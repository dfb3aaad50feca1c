"""What a restore uses where the user chose nothing (issue 20): the automatic stop, the
preset's ``[everyday]`` table (denoising: a narrower network) and ``precision = "auto"`` (bf16
where it measures faster: tests/test_precision.py) — never for ``reproduce``, never over the
user's choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_problems import ON_CPU

import deeprestore.execution as execution
from deeprestore.config.presets import load_preset
from deeprestore.config.resolve import BF16_TASKS, SettingsResolver, everyday_defaults

CPU = torch.device("cpu")


def test_nothing_chosen_gives_the_stop_and_auto_precision_where_bf16_kept_the_quality():
    assert everyday_defaults({}, "denoise") == {"stop": "auto", "precision": "auto"}
    for task in ("deblur", "superres", "inpaint"):
        expected = "auto" if task in BF16_TASKS else "float32"
        assert everyday_defaults({}, task)["precision"] == expected


def test_the_users_choices_win():
    assert everyday_defaults({"iterations": 50}, "denoise") == {"iterations": 50,
                                                                "precision": "auto"}
    assert everyday_defaults({"stop": "fixed", "precision": "bf16"}, "deblur") == {
        "stop": "fixed", "precision": "bf16"}


def test_only_asked_for_does_the_resolver_change_the_preset():
    plain = SettingsResolver("denoise", "dip", {}, "auto", CPU).settings("denoise")[1]
    everyday = SettingsResolver("denoise", "dip", {}, "auto", CPU,
                                everyday=True).settings("denoise")[1]
    assert (plain.stop, plain.precision) == ("fixed", "float32")  # reproduce's view
    assert (everyday.stop, everyday.precision) == ("auto", "auto")
    assert everyday.iterations == plain.iterations  # the preset's count: the ceiling


def test_a_photo_gets_the_everyday_network_and_the_tables_the_papers():
    def settings(everyday: bool, **overrides):
        return SettingsResolver("denoise", "deepred", overrides, "auto", CPU,
                                everyday=everyday).settings("denoise")[1]

    table_row = settings(False)
    assert table_row.net_channels == 128  # Table 1's network, what reproduce runs
    assert settings(True).net_channels == load_preset("denoise").everyday["net_channels"] < 128
    assert settings(True, net_channels=128).net_channels == 128  # --set wins
    assert settings(True).lam == table_row.lam and settings(True).lr == table_row.lr


@pytest.mark.parametrize("native", [True, False])
def test_the_command_line_records_the_defaults_it_used(run_cli, tiny_images, tmp_path: Path,
                                                       monkeypatch, native):
    import deeprestore.solvers.timing as timing

    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: native)
    real = timing.step_seconds
    monkeypatch.setattr(timing, "step_seconds", lambda problem, settings, device, ex, precisions: (
        {"float32": (0.3, 0), "bf16": (0.1, 0)} if len(precisions) > 1
        else real(problem, settings, device, ex, precisions)))  # bf16 measured 3× faster
    preset = tmp_path / "short.toml"
    text = (Path(__file__).parents[1] / "presets" / "denoise-quick.toml").read_text()
    preset.write_text(text.replace('name = "denoise-quick"', 'name = "short"')
                      .replace("iterations = 400 ", "iterations = 3 "))
    done = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "--preset", preset, "-q",
                   "--no-compare", "--sigma", "25", "-o", tmp_path / "out")
    assert done.code == 0, done.err
    manifest = json.loads((tmp_path / "out" / "noisy_dip.json").read_text())
    assert manifest["parameters"]["stop"] == "auto"
    # auto: bf16 where a CPU has it and it measures faster; on CUDA the run stays float32
    assert manifest["parameters"]["precision"] == ("bf16" if native and ON_CPU else "float32")
    assert manifest["iterations"] == 3 and manifest["stopped_at"] is None  # the ceiling
