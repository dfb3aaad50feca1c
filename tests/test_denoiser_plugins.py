"""Denoisers from outside: a plugin registered through entry-point metadata, a torch module
with trainable parameters as f (issue 35, item 3 and the denoiser protocol)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch
from tiny_problems import DEVICE_NAME

import deeprestore.denoisers as denoisers
from deeprestore.denoisers import Denoiser, choose_denoiser, get_denoiser


class BoxFilter(torch.nn.Module):
    """A 3×3 mean filter with a trainable weight: a denoiser module with parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((1, 1, 3, 3), 1 / 9))

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        channels = x.shape[1]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return torch.nn.functional.conv2d(padded, self.weight.expand(channels, 1, 3, 3),
                                          groups=channels)


@pytest.fixture
def plugin(monkeypatch):
    """A package that registers ``box`` under the ``deeprestore.denoisers`` entry points."""
    module = BoxFilter()
    entry = metadata.EntryPoint("box", "somepkg.filters:box", denoisers.ENTRY_POINT_GROUP)
    monkeypatch.setattr(metadata.EntryPoint, "load", lambda self: module)

    def entry_points(**kwargs):
        return [entry] if kwargs.get("group") == denoisers.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(denoisers.metadata, "entry_points", entry_points)
    monkeypatch.setattr(denoisers, "_plugins_loaded", False)
    monkeypatch.setattr(denoisers, "DENOISERS", dict(denoisers.DENOISERS))
    return module


def test_a_plugin_denoiser_is_listed_and_runs_from_the_command_line(plugin, run_cli,
                                                                    tiny_images, tmp_path):
    assert "box" in denoisers.denoiser_names()
    assert choose_denoiser("auto", "box", torch.device("cuda")) == "box"  # no torch twin: kept
    done = run_cli("denoise", tiny_images["noisy"], "-m", "deepred", "--denoiser", "box",
                   "--sigma", "25", "--iters", "25", "--set", "net_channels=8", "--no-compare",
                   "--device", DEVICE_NAME, "-o", tmp_path / "out")
    assert done.code == 0, done.err
    manifest = json.loads((tmp_path / "out" / "noisy_deepred.json").read_text())
    assert manifest["denoiser"] == "box" and manifest["denoiser_calls"] > 0
    assert plugin.weight.grad is None
    listed = run_cli("presets")
    assert listed.code == 0 and any(line.split()[:1] == ["box"]
                                    for line in listed.out.splitlines())


# 50 iterations each. DeepRED returns its x (ADMM's, with f's pull): the preset's EMA of the
# network outputs still holds the grey it started from at 50 (16.3 dB against the input's 20.2
# on this crop; x 21.7)
@pytest.mark.parametrize("method, extra", [("deepred", {"output": "x"}), ("red", {})])
def test_a_module_with_parameters_as_f_gets_no_gradient(plugin, demo_pair, method, extra):
    import deeprestore
    from deeprestore.metrics import psnr_rgb

    clean, noisy = (a[:32, :32] for a in demo_pair)
    done = deeprestore.restore(noisy, task="denoise", method=method, denoiser="box", sigma=25,
                               iterations=50, net_channels=8, device=DEVICE_NAME, **extra)
    assert done.denoiser_calls > 0 and done.settings.denoiser == "box"
    assert plugin.weight.grad is None and plugin.weight.requires_grad

    def tensor(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float()

    noisy_psnr = float(psnr_rgb(tensor(noisy), tensor(clean)))
    assert float(psnr_rgb(tensor(done.image), tensor(clean))) > noisy_psnr


def test_a_registered_name_cannot_be_taken_twice(monkeypatch):
    monkeypatch.setattr(denoisers, "DENOISERS", dict(denoisers.DENOISERS))
    mine = Denoiser("mine", lambda x, sigma: x, "any", "identity")
    denoisers.register_denoiser(mine)
    assert get_denoiser("mine") is mine
    with pytest.raises(ValueError, match="registered already"):
        denoisers.register_denoiser(Denoiser("nlm", lambda x, sigma: x, "any", "x"))


@pytest.mark.parametrize("method, mode", [("deepred", "sync"), ("deepred", "async"),
                                          ("red", "sync")])
def test_every_method_calls_f_through_the_one_schedule(plugin, monkeypatch, method, mode):
    from tiny_problems import restore, tiny_denoising_problem

    from deeprestore.config.settings import Settings
    from deeprestore.solvers import schedule

    seen: list[str] = []
    real_call, real_background = (schedule.DenoiserSchedule.call,
                                  schedule.DenoiserSchedule._background_call)
    monkeypatch.setattr(schedule.DenoiserSchedule, "call", lambda self, x, threads=None: (
        seen.append(self.denoiser.name), real_call(self, x, threads))[1])
    monkeypatch.setattr(schedule.DenoiserSchedule, "_background_call",
                        lambda self, x, threads: (seen.append(self.denoiser.name),
                                                  real_background(self, x, threads))[1])
    result = restore(tiny_denoising_problem(16),
                     Settings(method=method, iterations=4, denoiser="box", net_channels=8,
                              denoiser_mode=mode, sigma_f=5.0), denoiser=get_denoiser("box"))
    assert seen and set(seen) == {"box"}
    assert 0 < result.denoiser_calls <= len(seen)  # async: the last call may be in flight


def test_auto_on_cuda_keeps_a_denoiser_without_a_torch_twin_and_says_so_once(plugin):
    from deeprestore.config.resolve import SettingsResolver

    del denoisers.DENOISERS["nlm-torch"]  # the preset's NLM without its torch twin
    resolver = SettingsResolver("denoise", "deepred", {}, "auto", torch.device("cuda"))
    for _ in range(2):
        assert resolver.settings("denoise")[1].denoiser == "nlm"
    assert len(resolver.notes) == 1 and "nlm has no torch version" in resolver.notes[0]
    on_cpu = SettingsResolver("denoise", "deepred", {}, "auto", torch.device("cpu"))
    assert on_cpu.settings("denoise")[1].denoiser == "nlm" and not on_cpu.notes
