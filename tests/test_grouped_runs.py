"""``Execution(grouped=True)``: the runs' networks as one grouped-convolution network.

The grouped step must be the runs' own steps (same losses, same Adam updates, up to rounding),
and its state must travel through the runs' own nets and optimisers, so that checkpoints and
rollbacks keep one format whichever way the runs are stepped.
"""

from __future__ import annotations

import pytest
import torch
from tiny_problems import DEVICE, on_device, tiny_denoising_problem

from deeprestore.config.settings import Settings
from deeprestore.execution import Execution
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.network import NetworkAlgorithm

# One torch thread: no side-by-side workers, the same rounding in every algorithm.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**changes: object) -> Settings:
    base: dict[str, object] = dict(method="dip", iterations=20, log_every=5, runs=2, seed=3,
                                   net_channels=8, skip_channels=2, output="network",
                                   sigma_f=10.0, tv_weight=0.01, denoise_every=1)
    base.update(changes)
    return Settings(**base).validate()  # type: ignore[arg-type]


def _algorithm(settings: Settings, grouped: bool) -> NetworkAlgorithm:
    algorithm = make_algorithm(on_device(tiny_denoising_problem()), settings, DEVICE,
                               execution=Execution(grouped=grouped))
    assert isinstance(algorithm, NetworkAlgorithm)
    assert (algorithm._group is not None) is grouped
    return algorithm


def _conv_weights(state: dict) -> dict[str, torch.Tensor]:
    """A run's 3×3 and 1×1 convolution weights (biases before BatchNorm get rounding-noise
    gradients, so Adam's first step there is not comparable between two roundings)."""
    return {name: t for name, t in state["net"].items() if name.endswith("weight") and t.dim() == 4}


@pytest.mark.parametrize("method", ["dip", "dip-tv", "deepred"])
def test_a_grouped_step_is_each_runs_own_step(method):
    settings = _settings(method=method)
    separate, grouped = _algorithm(settings, False), _algorithm(settings, True)
    loss_separate, _ = separate.update()
    loss_grouped, _ = grouped.update()
    # before any Adam step: same weights, z, perturbation, x and u in both
    assert torch.allclose(loss_grouped, loss_separate, rtol=1e-5, atol=0)
    for run_separate, run_grouped in zip(separate.state_dict()["runs"],
                                         grouped.state_dict()["runs"], strict=True):
        alike = [(a - b).abs() <= 1e-5 for a, b in zip(_conv_weights(run_separate).values(),
                                                       _conv_weights(run_grouped).values(),
                                                       strict=True)]
        # run r given run s's step (or none, or both) leaves a small fraction alike
        assert sum(int(m.sum()) for m in alike) >= 0.99 * sum(m.numel() for m in alike)
        assert torch.allclose(run_grouped["out"], run_separate["out"], atol=1e-4)


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_a_grouped_run_resumes_from_its_state_exactly():
    settings = _settings(method="deepred")
    straight = _algorithm(settings, True)
    for _ in range(6):
        straight.update()
    first = _algorithm(settings, True)
    for _ in range(3):
        first.update()
    state = first.state_dict()
    resumed = _algorithm(settings, True)
    resumed.load_state_dict(state)
    for _ in range(3):
        resumed.update()
    # Θ, Adam's moments and the perturbation generators all came back, or this would differ
    assert torch.equal(resumed.estimate(), straight.estimate())


def test_a_grouped_state_is_the_runs_own_format():
    """Saved grouped, loaded into one-network-per-run: the next loss (before its Adam step)
    is the one the grouped run computes next."""
    settings = _settings(method="deepred")
    grouped = _algorithm(settings, True)
    for _ in range(3):
        grouped.update()
    separate = _algorithm(settings, False)
    separate.load_state_dict(grouped.state_dict())
    loss_separate, _ = separate.update()
    loss_grouped, _ = grouped.update()
    assert torch.allclose(loss_separate, loss_grouped, rtol=1e-5, atol=0)
    assert not torch.allclose(loss_separate, _algorithm(settings, False).update()[0], rtol=1e-3)


def test_scaling_the_learning_rate_reaches_the_grouped_optimiser():
    grouped = _algorithm(_settings(), True)
    assert grouped._group is not None
    rate = grouped.scale_learning_rate(0.5)
    # the group steps with the runs' own optimisers' rates
    assert [float(run.optimizer.param_groups[0]["lr"]) for run in grouped.runs] == \
        pytest.approx([0.5 * _settings().lr] * 2)
    assert rate == pytest.approx(0.5 * _settings().lr)
    state = grouped.state_dict()["runs"][0]["optimizer"]
    assert state["param_groups"][0]["lr"] == pytest.approx(rate)
