import copy

import pytest
import torch
from tiny_problems import astronaut_crop, restore, torch_threads

from deeprestore.apps.degrade import degrade_pixels
from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution
from deeprestore.metrics import psnr_rgb, psnr_y
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.updates import (
    dual_update,
    fixed_point_update,
    steepest_descent_update,
    total_variation,
)
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import build_problem


def test_fixed_point_update_against_hand_computed_values():
    denoised = torch.tensor([0.2, 0.4]).view(1, 1, 1, 2)
    out = torch.tensor([0.6, 0.1]).view(1, 1, 1, 2)
    u = torch.tensor([0.1, -0.1]).view(1, 1, 1, 2)
    # λ = 0.5, µ = 1.5: x = (0.5 f + 1.5 (T + u)) / 2
    x = fixed_point_update(denoised, out, u, 0.5, 1.5)
    expected = [(0.5 * 0.2 + 1.5 * 0.7) / 2.0, (0.5 * 0.4 + 1.5 * 0.0) / 2.0]  # 0.575, 0.1
    assert x.flatten().tolist() == pytest.approx(expected, abs=1e-7)


def test_steepest_descent_update_against_hand_computed_values():
    x = torch.tensor([0.5]).view(1, 1, 1, 1)
    denoised = torch.tensor([0.3]).view(1, 1, 1, 1)
    out = torch.tensor([0.4]).view(1, 1, 1, 1)
    u = torch.tensor([0.05]).view(1, 1, 1, 1)
    # grad = λ (0.5 − 0.3) + µ (0.5 − 0.4 − 0.05) = 0.5·0.2 + 2·0.05 = 0.2; x − 0.25·0.2 = 0.45
    new = steepest_descent_update(x, denoised, out, u, 0.5, 2.0, 0.25)
    assert new.item() == pytest.approx(0.45, abs=1e-7)


def test_dual_update_against_hand_computed_values():
    u = torch.tensor([0.1, 0.0])
    x = torch.tensor([0.5, 0.2])
    out = torch.tensor([0.45, 0.3])
    assert dual_update(u, x, out).tolist() == pytest.approx([0.05, 0.1], abs=1e-7)


def test_total_variation_of_a_step_edge():
    x = torch.zeros(1, 1, 4, 4)
    x[..., :, 2:] = 1.0  # one vertical edge of height 4, jump 1
    assert total_variation(x, eps=0.0).item() == pytest.approx(4.0)
    assert total_variation(torch.full((1, 3, 5, 5), 0.3), eps=0.0).item() == 0.0


def _problem(size: int = 16, seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 3, size, size, generator=g) * 0.5 + 0.25
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return Problem(noisy, Identity(), noisy.clone(), 25.0, clean, psnr_rgb)


def _fast(**kw) -> Settings:
    base = {"iterations": 4, "log_every": 2, "seed": 3, "sigma_f": 10.0}
    base.update(kw)
    return Settings(**base)


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
def test_deepred_with_lambda_and_mu_zero_is_dip_bit_for_bit():
    problem = _problem()
    dip = restore(problem, _fast(method="dip"))
    deepred = restore(problem, _fast(method="deepred", lam=0.0, mu=0.0))
    assert torch.equal(dip.image, deepred.image)
    assert [r.loss for r in dip.log] == [r.loss for r in deepred.log]
    assert deepred.denoiser_calls == 0


def test_deepred_with_lambda_zero_never_calls_the_denoiser():
    calls = []

    def spy(x: torch.Tensor, sigma: float) -> torch.Tensor:
        calls.append(sigma)
        return x

    spy_denoiser = Denoiser("spy", spy, "any", "records calls")
    restore(_problem(), _fast(method="deepred", lam=0.0, mu=0.5), denoiser=spy_denoiser)
    assert calls == []
    restore(_problem(), _fast(method="deepred", denoise_every=2), denoiser=spy_denoiser)
    assert calls == [10.0, 10.0]  # iterations 1 and 3 of 4


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
def test_same_seed_same_result_and_other_seed_differs():
    problem = _problem()
    a = restore(problem, _fast(method="deepred"))
    b = restore(problem, _fast(method="deepred"))
    c = restore(problem, _fast(method="deepred", seed=4))
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.image, c.image)


@pytest.mark.cpu_only(reason="the CPU's layout and Adam options")
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_the_cpu_layout_and_adam_follow_the_execution_options(channels_last, fused):
    execution = Execution(cpu_channels_last=channels_last, fused_adam=fused)
    algorithm = NetworkAlgorithm(_problem(), _fast(method="dip", runs=2), torch.device("cpu"),
                                 None, execution)
    for run in algorithm.runs:
        convs = [m for m in run.net.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert convs
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
                   for c in convs)
        assert run.z.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert bool(run.optimizer.defaults["fused"]) == fused
    algorithm.close()


def test_the_default_cpu_step_is_the_standard_layout_with_a_fused_adam():
    # The measured best on a CPU (docs/performance.md): channels-last was 1.3–1.4× slower.
    assert DEFAULT_EXECUTION.fused_adam and not DEFAULT_EXECUTION.cpu_channels_last


TUNINGS = {True: Execution(cpu_channels_last=True, fused_adam=True),
           False: Execution(cpu_channels_last=False, fused_adam=False)}


@pytest.mark.cpu_only(reason="the CPU's layout and Adam options")
def test_cpu_tuning_changes_the_rounding_not_the_network():
    # Same seed, channels-last with a fused Adam or neither: the first loss (network output
    # before any Adam step) agrees to float32 rounding; a wrong layout (e.g. channels mixed up)
    # would change it entirely. Later losses are not compared: Adam's first steps
    # (≈ lr·sign(g)) amplify any rounding change, a thread count's included (iteration 2
    # already differs by ~1 % between 1 and 2 threads).
    problem = _problem(size=24)
    losses = {}
    for tuned in (True, False):
        result = restore(problem, _fast(method="dip", iterations=1, log_every=1),
                         execution=TUNINGS[tuned])
        losses[tuned] = result.log[0].loss
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


@pytest.mark.cpu_only(reason="the CPU's layout and Adam options")
def test_the_tuned_adam_step_moves_each_weight_as_the_untuned_one():
    # torch's fused CPU Adam walks parameter, gradient and moments as flat memory, so a
    # gradient in another layout than its channels-last 3×3 weight would move the wrong
    # elements: about half of them by ~2·lr = 0.02. After one step the tuned and untuned
    # weights agree instead, up to the rounding of near-zero gradients (Adam's first step is
    # g / (|g| + eps)). Biases are left out: before a BatchNorm their gradient is rounding noise.
    problem = _problem()
    settings = _fast(method="dip", net_channels=8, skip_channels=2)
    weights = {}
    for tuned in (True, False):
        algorithm = NetworkAlgorithm(problem, settings, torch.device("cpu"), None,
                                     TUNINGS[tuned])
        algorithm.update()
        weights[tuned] = [m.weight.detach().clone() for m in algorithm.runs[0].net.modules()
                          if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(weights[True]) > 5
    for a, b in zip(weights[True], weights[False], strict=True):
        moved_alike = (a - b).abs() <= 1e-3
        assert moved_alike.float().mean().item() >= 0.99, a.shape


@pytest.mark.cpu_only(reason="the CPU's fused Adam and layouts; bit-identical resume")
@pytest.mark.parametrize("channels_last", [True, False])
def test_a_state_with_adam_moments_in_the_other_layout_resumes_exactly(channels_last):
    # A checkpoint from an engine with the other CPU layout (channels-last was the default on
    # 2026-12-01) holds Adam's moments in that layout; torch's fused CPU Adam steps them wrongly
    # unless they are given the network's layout when loaded.
    problem = _problem()
    settings = _fast(method="dip", iterations=6, net_channels=8, skip_channels=2)
    cpu = torch.device("cpu")
    execution = Execution(cpu_channels_last=channels_last)
    source = NetworkAlgorithm(problem, settings, cpu, None, execution)
    for _ in range(2):
        source.update()
    state = source.state_dict()
    other = copy.deepcopy(state)
    layout = torch.contiguous_format if channels_last else torch.channels_last
    changed = 0
    for run_state in other["runs"]:
        for moments in run_state["optimizer"]["state"].values():
            for key, value in moments.items():
                if torch.is_tensor(value) and value.dim() == 4 and value.shape[-1] > 1:
                    moments[key] = value.contiguous(memory_format=layout)
                    changed += 1
    assert changed > 0
    weights = []
    for saved in (state, other):
        resumed = NetworkAlgorithm(problem, settings, cpu, None, execution)
        resumed.load_state_dict(saved)
        resumed.update()  # one Adam step from the loaded moments
        weights.append([p.detach().clone() for p in resumed.runs[0].net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_runs_are_averaged():
    problem = _problem()
    one = restore(problem, _fast(method="dip", runs=1, output="network"))
    two = restore(problem, _fast(method="dip", runs=2, output="network"))
    # run 0 of the two-run job is the single run; the average differs from it
    assert not torch.equal(one.image, two.image)
    assert two.image.shape == one.image.shape


def test_red_identity_fixed_point_closed_form():
    problem = _problem()
    constant = Denoiser("half", lambda x, s: torch.full_like(x, 0.5), "any", "constant 0.5")
    result = restore(
        problem, Settings(method="red", iterations=1, lam=3.0, clip_x=False), denoiser=constant
    )
    expected = (problem.y + 3.0 * 0.5) / 4.0
    assert torch.allclose(result.image, expected.clamp(0, 1), atol=1e-6)


def test_red_with_a_blur_solves_the_normal_equations_and_helps():
    clean = astronaut_crop(32)
    degraded = degrade_pixels(clean, "deblur", kernel="uniform9", seed=1)
    tp = build_problem(TaskOptions("deblur", kernel="uniform9"), Image(degraded.image),
                       Image(clean))
    p = tp.problem
    settings = Settings(method="red", iterations=15, lam=0.04, sigma_f=3.25, log_every=5)
    result = restore(p, settings)
    assert psnr_y(result.image, p.reference) > psnr_y(p.y, p.reference) + 1.0


def test_log_rows_every_log_every_and_at_the_end():
    result = restore(_problem(), _fast(method="deepred", iterations=5, log_every=2))
    assert [r.iteration for r in result.log] == [2, 4, 5]
    assert all(r.psnr is not None and r.gap is not None for r in result.log)
    assert [r.seconds for r in result.log] == sorted(r.seconds for r in result.log)
    dip = restore(_problem(), _fast(method="dip"))
    assert all(r.gap is None for r in dip.log)


def test_progress_callback_is_called_per_log_row():
    events = []
    restore(_problem(), _fast(method="dip", iterations=6, log_every=3), callback=events.append)
    assert [(e.iteration, e.total) for e in events] == [(3, 6), (6, 6)]


@pytest.mark.cpu_only(reason="CPU threads shared with a CPU denoiser")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_threaded_cpu_denoiser_gets_all_cores_in_sync_and_the_spare_one_in_async(mode):
    seen: list[int | None] = []

    def spy(x: torch.Tensor, sigma: float, threads: int | None = None) -> torch.Tensor:
        seen.append(threads)
        return x

    threaded = Denoiser("spy", spy, "cpu", "records thread counts", threaded=True)
    with torch_threads(2):
        restore(_problem(), _fast(method="deepred", denoiser_mode=mode, denoise_every=2),
                denoiser=threaded)
        after = torch.get_num_threads()
    assert seen
    # sync: the call owns both threads; async: torch keeps one, the worker's call gets the other
    assert seen == [2 if mode == "sync" else 1] * len(seen)
    assert after == 2  # restored when the run ends
