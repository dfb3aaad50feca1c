"""The authors' code's rules as settings: λ/µ growth, the loss form, DIP's backtracking, the
denoiser's one-period lag, x starting at zeros, learning-rate decay (docs/algorithm.md)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_problems import DEVICE, on_device, tiny_denoising_problem

from deeprestore.config.settings import Settings, SettingsError
from deeprestore.denoisers import Denoiser
from deeprestore.metrics import psnr_y
from deeprestore.physics.operators import Downsample
from deeprestore.solvers.base import Problem
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.runner import Runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONSTANT = Denoiser("half", lambda x, s: torch.full_like(x, 0.5), "any", "constant 0.5")


def _settings(**values: object) -> Settings:
    base: dict[str, object] = {"method": "deepred", "iterations": 6, "net_channels": 8,
                               "skip_channels": 2, "input_channels": 4, "log_every": 1}
    base.update(values)
    return Settings(**base).validate()  # type: ignore[arg-type]


def _algorithm(problem: Problem, **values: object) -> NetworkAlgorithm:
    """The algorithm for ``problem`` (on the test device) with the constant denoiser."""
    return NetworkAlgorithm(problem, _settings(**values), DEVICE, CONSTANT)


def _tiny() -> Problem:
    """tiny_problems' 16 px denoising problem, on the test device."""
    return on_device(tiny_denoising_problem())


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``gen`` (on the CPU), on the test device."""
    return torch.rand(*shape, generator=gen).to(DEVICE)


def _superres_problem(size: int = 32, factor: int = 4) -> Problem:
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(1, 3, size, size, generator=gen)
    operator = Downsample(factor)
    y = operator.forward(clean)
    return on_device(Problem(y, operator, torch.nn.functional.interpolate(y, scale_factor=factor),
                             0.0, clean, psnr_y))


# --- λ and µ growth ---------------------------------------------------------------------

def test_growth_adds_the_step_to_lam_and_mu_at_every_trigger() -> None:
    algorithm = _algorithm(_tiny(), lam=0.5, mu=0.4, grow_step=0.03,
                           grow_threshold=-50.0, grow_threshold_step=0.01)
    for _ in range(5):
        algorithm.update()
    (run,) = algorithm.runs
    assert run.lam == pytest.approx(0.5 + 5 * 0.03)
    assert run.mu == pytest.approx(0.4 + 5 * 0.03)
    assert run.threshold == pytest.approx(-50.0 + 5 * 0.01)
    assert algorithm.weights() == (pytest.approx(0.65), pytest.approx(0.55))


def test_growth_stops_when_the_threshold_outgrows_the_psnr() -> None:
    # the first trigger raises the threshold far above any PSNR: exactly one growth
    algorithm = _algorithm(_tiny(), grow_step=0.1, grow_threshold=-50.0,
                           grow_threshold_step=500.0)
    for _ in range(4):
        algorithm.update()
    assert algorithm.runs[0].lam == pytest.approx(0.6)


def test_no_growth_below_the_threshold_or_when_off() -> None:
    for values in ({"grow_step": 0.03, "grow_threshold": 500.0}, {"grow_step": 0.0,
                                                                  "grow_threshold": -50.0}):
        algorithm = _algorithm(_tiny(), **values)
        for _ in range(3):
            algorithm.update()
        assert (algorithm.runs[0].lam, algorithm.runs[0].mu) == (0.5, 0.5)


def test_grown_weights_drive_the_x_update_and_reach_the_log() -> None:
    problem = _tiny()
    algorithm = _algorithm(problem, lam=0.2, mu=0.6, grow_step=0.5, grow_threshold=-50.0)
    result = Runner(algorithm, problem, log_every=1).run()
    assert [row.lam for row in result.log] == pytest.approx([0.2 + 0.5 * k for k in range(1, 7)])
    # the x-update of iteration 2 used λ = 0.7, µ = 1.1 (grown after iteration 1): recompute it
    fresh = _algorithm(problem, lam=0.2, mu=0.6, grow_step=0.5, grow_threshold=-50.0)
    fresh.update()
    run = fresh.runs[0]
    u_before = run.u.clone()
    fresh.update()
    assert run.out is not None
    expected = ((0.7 * 0.5 + 1.1 * (run.out + u_before)) / 1.8).clamp(0, 1)
    assert torch.allclose(run.x, expected, atol=1e-6)


def test_growth_is_part_of_the_saved_state() -> None:
    algorithm = _algorithm(_tiny(), grow_step=0.03, grow_threshold=-50.0)
    for _ in range(3):
        algorithm.update()
    state = algorithm.state_dict()
    other = _algorithm(_tiny(), grow_step=0.03, grow_threshold=-50.0)
    other.load_state_dict(state)
    assert (other.runs[0].lam, other.runs[0].threshold) == (algorithm.runs[0].lam,
                                                            algorithm.runs[0].threshold)


# --- the loss form --------------------------------------------------------------------

def _loss_gradients(loss_terms: str, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """d loss / d T for the data term alone (µ = 0 weight) and for the whole loss."""
    problem = _superres_problem()
    algorithm = _algorithm(problem, loss_terms=loss_terms, mu=mu)
    gen = torch.Generator().manual_seed(3)
    out = _rand(gen, 1, 3, 32, 32).requires_grad_(True)
    x, u = _rand(gen, 1, 3, 32, 32), 0.1 * _rand(gen, 1, 3, 32, 32)
    loss, _ = algorithm.losses(out, x, u, mu)
    (grad,) = torch.autograd.grad(loss.sum(), out)
    return loss.detach(), grad


def test_mean_form_weighs_the_data_term_by_the_downsampling_factor_squared() -> None:
    # ×4 SR: y has 1/16 of x's pixels. The data term's gradient is 16× larger in the mean form,
    # the proximal term's the same in both forms.
    _, data_sum = _loss_gradients("sum", mu=1e-12)
    _, data_mean = _loss_gradients("mean", mu=1e-12)
    assert torch.allclose(data_mean, 16.0 * data_sum, rtol=1e-4, atol=1e-9)
    _, whole_sum = _loss_gradients("sum", mu=0.06)
    _, whole_mean = _loss_gradients("mean", mu=0.06)
    prox_sum, prox_mean = whole_sum - data_sum, whole_mean - data_mean
    assert torch.allclose(prox_mean, prox_sum, rtol=1e-4, atol=1e-9)
    assert prox_sum.abs().max() > 0


def test_mean_form_values_are_the_authors_mse_terms() -> None:
    problem = _superres_problem()
    algorithm = _algorithm(problem, loss_terms="mean", mu=0.06)
    gen = torch.Generator().manual_seed(4)
    out, x = _rand(gen, 1, 3, 32, 32), _rand(gen, 1, 3, 32, 32)
    u = torch.zeros_like(x)
    loss, data_mse = algorithm.losses(out, x, u, 0.06)
    mse = torch.nn.functional.mse_loss
    y_term = mse(problem.operator.forward(out), problem.y)
    assert loss.item() == pytest.approx(0.5 * (y_term + 0.06 * mse(out, x - u)).item(), rel=1e-5)
    assert data_mse.item() == pytest.approx(y_term.item(), rel=1e-5)


def test_both_forms_agree_when_h_keeps_the_size() -> None:
    problem = _tiny()
    gen = torch.Generator().manual_seed(5)
    out, x = _rand(gen, 1, 3, 16, 16), _rand(gen, 1, 3, 16, 16)
    u = torch.zeros_like(x)
    values = [_algorithm(problem, loss_terms=form).losses(out, x, u, 0.5)[0].item()
              for form in ("sum", "mean")]
    assert values[0] == pytest.approx(values[1], rel=1e-6)


# --- DIP's backtracking ---------------------------------------------------------------

def _wreck(algorithm: NetworkAlgorithm) -> None:
    """Push the output layer's bias far out: the sigmoid saturates, PSNR(T, y) collapses."""
    last_bias = [p for name, p in algorithm.runs[0].net.named_parameters()
                 if name.endswith("bias")][-1]
    with torch.no_grad():
        last_bias.fill_(-60.0)


def test_backtrack_restores_the_weights_of_the_last_good_output_exactly() -> None:
    problem = _tiny()
    algorithm = _algorithm(problem, method="dip", backtrack_drop=5.0)
    run = algorithm.runs[0]
    algorithm.update()
    theta_1 = [p.detach().clone() for p in run.net.parameters()]
    algorithm.update()  # its output is good: Θ_1, which made it, is stored; then Adam steps
    assert not all(torch.equal(a, b) for a, b in zip(theta_1, run.net.parameters(), strict=True))
    _wreck(algorithm)
    assert run.ema is not None
    ema = run.ema.clone()
    algorithm.update()  # the wrecked weights' output collapses: back to Θ_1, no Adam step
    assert all(torch.equal(a, b.detach())
               for a, b in zip(theta_1, run.net.parameters(), strict=True))
    assert torch.equal(run.ema, ema)  # the collapsed output does not enter the average
    (event,) = algorithm.backtrack_events()
    assert event["at"] == 3 and event["run"] == 0
    assert event["psnr"] < event["back_to_psnr"] - 5.0


def test_without_backtracking_the_wrecked_weights_stay() -> None:
    algorithm = _algorithm(_tiny(), method="dip", backtrack_drop=0.0)
    algorithm.update()
    _wreck(algorithm)
    algorithm.update()
    assert algorithm.backtrack_events() == []
    last_bias = [p for name, p in algorithm.runs[0].net.named_parameters()
                 if name.endswith("bias")][-1]
    assert last_bias.detach().mean().item() < -50.0


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_backtrack_state_survives_a_checkpoint() -> None:
    problem = _tiny()
    algorithm = _algorithm(problem, method="dip", backtrack_drop=5.0)
    algorithm.update()
    algorithm.update()
    other = _algorithm(problem, method="dip", backtrack_drop=5.0)
    other.load_state_dict(algorithm.state_dict())
    _wreck(algorithm)
    _wreck(other)
    algorithm.update()
    other.update()
    assert all(torch.equal(a, b) for a, b in zip(algorithm.runs[0].net.parameters(),
                                                 other.runs[0].net.parameters(), strict=True))


# --- the denoiser's one-period lag, x from zeros, LR decay ----------------------------

def _recording_denoiser(seen: list[torch.Tensor]) -> Denoiser:
    def record(x: torch.Tensor, sigma: float) -> torch.Tensor:
        seen.append(x.clone())
        return (x + 1.0) / 2.0

    return Denoiser("spy", record, "any", "records its inputs")


def test_lagged_denoiser_follows_the_authors_thread() -> None:
    problem = _tiny()
    seen: list[torch.Tensor] = []
    settings = _settings(denoiser_lag=True, denoise_every=3, iterations=9)
    algorithm = NetworkAlgorithm(problem, settings, DEVICE, _recording_denoiser(seen))
    run = algorithm.runs[0]
    xs = [run.x.clone()]
    ages = []
    for _ in range(7):
        algorithm.update()
        xs.append(run.x.clone())
        ages.append(algorithm.denoiser_age())
    # called at rounds 3 and 6: on x₀, then on the x before round 3's update (x₂)
    assert len(seen) == 2
    assert torch.equal(seen[0], xs[0]) and torch.equal(seen[1], xs[2])
    assert ages == [None, None, 2, 3, 4, 3, 4]


def test_paper_schedule_denoises_the_current_x_on_rounds_1_plus_kd() -> None:
    problem = _tiny()
    seen: list[torch.Tensor] = []
    settings = _settings(denoise_every=3, iterations=9)
    algorithm = NetworkAlgorithm(problem, settings, DEVICE, _recording_denoiser(seen))
    run = algorithm.runs[0]
    xs = [run.x.clone()]
    for _ in range(4):
        algorithm.update()
        xs.append(run.x.clone())
    assert len(seen) == 2 and torch.equal(seen[0], xs[0]) and torch.equal(seen[1], xs[3])


def test_async_mode_ignores_the_lag() -> None:
    problem = _tiny()
    settings = _settings(denoiser_lag=True, denoiser_mode="async", iterations=3)
    algorithm = NetworkAlgorithm(problem, settings, DEVICE, CONSTANT)
    try:
        for _ in range(3):
            algorithm.update()
    finally:
        algorithm.close()
    assert algorithm.denoiser_calls >= 1  # started on round 1, as async without the lag


def test_x_starts_at_zeros_when_asked() -> None:
    problem = _superres_problem()
    zero = _algorithm(problem, x_start="zeros").runs[0]
    assert torch.count_nonzero(zero.x) == 0 and torch.count_nonzero(zero.denoised) == 0
    default = _algorithm(problem).runs[0]
    assert torch.equal(default.x, problem.x_init)


def test_learning_rate_decays_every_n_iterations() -> None:
    algorithm = _algorithm(_tiny(), method="dip", lr=0.01, lr_decay=0.5,
                           lr_decay_every=2, iterations=5)
    rates = []
    for _ in range(5):
        algorithm.update()
        rates.append(algorithm.runs[0].optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.01, 0.005, 0.005, 0.0025, 0.0025])


@pytest.mark.parametrize("key, value", [("loss_terms", "median"), ("x_start", "ones"),
                                        ("lr_decay", 1.5), ("lr_decay", 0.0),
                                        ("grow_step", -0.1), ("backtrack_drop", math.nan),
                                        ("lr_decay_every", 0)])
def test_bad_rule_settings_name_their_key(key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=key):
        _settings(**{key: value})


def test_the_csv_log_carries_lam_and_mu() -> None:
    from deeprestore.io.writers import CSV_COLUMNS, log_csv

    problem = _tiny()
    algorithm = _algorithm(problem, lam=0.5, mu=0.5, grow_step=0.25, grow_threshold=-50.0,
                           iterations=2)
    rows = log_csv(Runner(algorithm, problem, log_every=1).run().log).splitlines()
    header = rows[0].split(",")
    assert tuple(header) == CSV_COLUMNS
    lam, mu = header.index("lam"), header.index("mu")
    assert [(float(r.split(",")[lam]), float(r.split(",")[mu])) for r in rows[1:]] == [
        (0.75, 0.75), (1.0, 1.0)]
    dip = _algorithm(problem, method="dip", iterations=1)
    (row,) = log_csv(Runner(dip, problem, log_every=1).run().log).splitlines()[1:]
    assert row.split(",")[lam] == "" and row.split(",")[mu] == ""
