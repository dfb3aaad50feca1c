"""The automatic stop (``stop = "auto"``): the moving-variance rule and its use by the runner."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_problems import restore, tiny_denoising_problem

from deeprestore.arrays import Image
from deeprestore.config.settings import Settings, SettingsError
from deeprestore.io.writers import write_image
from deeprestore.solvers.control import RunControl
from deeprestore.solvers.stopping import STORAGE, VarianceStop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brute_force_signal(outputs: list[torch.Tensor]) -> float:
    """The variance of the outputs as the window keeps them (float16)."""
    stack = torch.stack([o.to(STORAGE).double() for o in outputs])
    return float(((stack - stack.mean(dim=0)) ** 2).mean())


def _scripted_outputs(count: int, quietest: int, seed: int = 0) -> list[torch.Tensor]:
    """Outputs whose spread shrinks towards iteration ``quietest`` and grows after it."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 8, 8, generator=gen)
    return [base + 0.01 * (abs(t - quietest) + 1) * torch.randn(1, 3, 8, 8, generator=gen)
            for t in range(1, count + 1)]


@pytest.mark.parametrize("window", [2, 5, 17])
def test_the_signal_is_the_variance_of_the_last_window_outputs(window):
    outputs = _scripted_outputs(60, 30, seed=window)
    rule = VarianceStop(window, patience=10**6)
    for t, output in enumerate(outputs, start=1):
        rule.observe(t, output, lambda output=output: output)
        if t < window:
            assert rule.signal is None
        else:
            expected = _brute_force_signal(outputs[t - window:t])
            assert rule.signal == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_it_stops_patience_iterations_after_the_minimum_and_keeps_that_estimate():
    window, patience = 6, 12
    outputs = _scripted_outputs(120, 50)
    rule = VarianceStop(window, patience)
    signals = {}
    estimates = {}
    for t, output in enumerate(outputs, start=1):
        estimates[t] = output * 0.5  # stands for "the image the run would return now"
        rule.observe(t, output, lambda t=t: estimates[t])
        if rule.signal is not None:
            signals[t] = rule.signal
        if rule.done:
            break
    best = min(signals, key=lambda t: signals[t])
    assert rule.done and rule.best_iteration == best
    assert rule.iteration == best + patience
    assert torch.equal(rule.best_estimate, estimates[best])
    report = rule.report(ceiling=120)
    assert report["stopped_at"] == best + patience and report["detected_at"] == best
    assert "new minimum" in report["reason"]


def test_a_steadily_settling_run_reaches_the_ceiling():
    pattern = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    rule = VarianceStop(4, 5)
    for t in range(1, 40):  # ± pattern / t: the spread of every window is below the last one's
        rule.observe(t, (-1) ** t * pattern / t, lambda: torch.zeros(1))
    assert not rule.done
    assert rule.report(ceiling=39)["stopped_at"] is None


def test_bad_stop_settings_are_refused():
    with pytest.raises(SettingsError, match="stop must be one of"):
        Settings(stop="early").validate()
    with pytest.raises(SettingsError, match="stop_window"):
        Settings(stop_window=1).validate()
    with pytest.raises(SettingsError, match="stop_patience"):
        Settings(stop_patience=0).validate()


def _settings(**changes) -> Settings:
    base = dict(method="dip", iterations=400, log_every=5, net_channels=8, skip_channels=2,
                seed=3, stop="auto", stop_window=5, stop_patience=4)
    base.update(changes)
    return Settings(**base).validate()


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
def test_an_auto_stopped_run_returns_the_estimate_of_its_detected_iteration():
    problem = tiny_denoising_problem()
    stopped = restore(problem, _settings())
    stop = stopped.stop
    assert stop is not None and stop["stopped_at"] is not None
    # the rule fires on the device and is read at logged rows (every 5 iterations here): the
    # run ends at the first logged row at or after it, and returns the detected estimate
    assert stop["stopped_at"] <= stopped.iterations < stop["stopped_at"] + 5
    assert stopped.iterations % 5 == 0 and stopped.iterations < 400
    assert stop["stopped_at"] - stop["detected_at"] == 4
    # the same run with a fixed count ending at the detected iteration gives the same image
    fixed = restore(problem, _settings(stop="fixed", iterations=stop["detected_at"]))
    assert fixed.stop is None
    assert torch.equal(stopped.image, fixed.image)
    signals = [row.stop_signal for row in stopped.log]
    assert signals[0] is not None and all(s is not None and s >= 0 for s in signals)
    assert stopped.log[-1].iteration == stopped.iterations


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_a_resumed_auto_stop_run_stops_where_the_whole_run_does():
    problem = tiny_denoising_problem()
    whole = restore(problem, _settings())
    saved: list[dict] = []
    restore(problem, _settings(), control=RunControl(checkpoint=saved.append,
                                                     checkpoint_every=10))
    assert saved and "stopper" in saved[0]
    resumed = restore(problem, _settings(), control=RunControl(resume=saved[-1]))
    assert resumed.stop == whole.stop
    assert torch.equal(resumed.image, whole.image)


def test_methods_without_a_network_ignore_the_automatic_stop():
    problem = tiny_denoising_problem()
    result = restore(problem, _settings(method="nlm", iterations=1, log_every=1))
    assert result.stop is None


def test_cli_iters_auto_records_where_and_why_it_stopped(run_cli, tmp_path):
    noisy = tiny_denoising_problem(32).y[0].permute(1, 2, 0).double().numpy()
    write_image(tmp_path / "noisy.png", Image(noisy))
    result = run_cli("denoise", tmp_path / "noisy.png", "--method", "dip", "--iters", "auto",
                     "--sigma", "25", "--set", "iterations=300", "--set", "stop_window=5",
                     "--set", "stop_patience=4", "--set", "net_channels=8", "-o",
                     tmp_path / "out", "-q")
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "out" / "noisy_dip.json").read_text())
    every = manifest["parameters"]["log_every"]
    assert manifest["stopped_at"] <= manifest["iterations"] < manifest["stopped_at"] + every
    assert manifest["iterations"] < 300
    assert manifest["stop"]["detected_at"] < manifest["stopped_at"]
    assert manifest["parameters"]["stop"] == "auto"
    header = (tmp_path / "out" / "noisy_dip.csv").read_text().splitlines()[0]
    assert header.endswith(",stop_signal")


@pytest.mark.parametrize("value", ["0", "soon", "-3"])
def test_cli_refuses_a_bad_iters_value_in_one_line(run_cli, tmp_path, value):
    result = run_cli("denoise", tmp_path / "missing.png", "--iters", value, "-o", tmp_path)
    assert result.code == 2
    assert "--iters" in result.err and "Traceback" not in result.err
    assert not any(tmp_path.iterdir())
