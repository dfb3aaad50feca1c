"""The cost estimate before a run: memory model, limits, and that it leaves the run alone."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_problems import DEVICE, on_device, restore, tiny_denoising_problem

from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.io.writers import write_image
from deeprestore.physics.operators import Identity
from deeprestore.solvers import memory, timing
from deeprestore.solvers.base import Problem
from deeprestore.solvers.cost import CostError, estimate_cost, parse_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**changes) -> Settings:
    base = dict(method="dip", iterations=20, log_every=5, net_channels=8, skip_channels=2,
                seed=2)
    base.update(changes)
    return Settings(**base).validate()


def _tiny() -> Problem:
    """The tiny denoising problem on the test device (as the estimate takes it)."""
    return on_device(tiny_denoising_problem())


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096), ("10MB", 10 * 1024**2), ("1.5 GB", int(1.5 * 1024**3)), ("2g", 2 * 1024**3),
    ("512KiB", 512 * 1024), ("3GiB", 3 * 1024**3)])
def test_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "-1GB", "0", "5XB", "nanGB"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError, match="expected a size"):
        parse_bytes(text)


@pytest.mark.cpu_only(reason="bytes are counted exactly on a CPU; CUDA's are measured "
                    "(cuDNN's workspaces and the allocator's rounding are not linear in pixels)")
def test_the_memory_of_a_large_image_is_extrapolated_within_two_percent():
    side = 192  # above the probe: predicted from the 64² and 128² probes
    assert side > memory.PROBE_SIDE
    y = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    problem = Problem(y, Identity(), y.clone(), 25.0)
    settings = _settings()
    problem = on_device(problem)
    predicted = memory.memory_model(problem, settings, DEVICE).peak
    measured = memory._network_bytes(problem, settings, DEVICE, memory.DEFAULT_EXECUTION)
    measured += 2 * y.numel() * y.element_size()  # y and x_init, as the prediction counts them
    assert predicted == pytest.approx(measured, rel=0.02)


def test_a_run_over_the_memory_budget_is_refused_before_any_step_is_timed(monkeypatch):
    def no_timing(*_args, **_kwargs):
        raise AssertionError("timed a step of a run that cannot fit")

    monkeypatch.setattr(timing, "_timed", no_timing)
    with pytest.raises(CostError, match="--max-memory budget is 1.0 KB"):
        estimate_cost(_tiny(), _settings(), DEVICE, max_bytes=1024)


def test_a_run_over_the_time_limit_is_refused(monkeypatch):
    monkeypatch.setattr(timing, "_timed", lambda call, device: 3.0)  # 3 s per step, 20 steps
    with pytest.raises(CostError, match="more than --max-minutes 0.5"):
        estimate_cost(_tiny(), _settings(), DEVICE, max_minutes=0.5)
    fine = estimate_cost(_tiny(), _settings(), DEVICE, max_minutes=2)
    assert fine is not None and fine.seconds == pytest.approx(60.0)


def test_denoiser_calls_are_counted_for_deepred():
    estimate = estimate_cost(_tiny(), _settings(method="deepred", denoise_every=3), DEVICE)
    assert estimate is not None and estimate.denoiser_calls == 7  # ceil(20 / 3)
    assert "denoiser calls" in estimate.describe()


def test_methods_without_a_network_have_no_estimate():
    assert estimate_cost(_tiny(), _settings(method="nlm", iterations=1), DEVICE) is None


@pytest.mark.cpu_only(reason="bit-identical outputs of two runs")
def test_estimating_first_does_not_change_the_run():
    problem = tiny_denoising_problem()
    alone = restore(problem, _settings())
    estimate_cost(on_device(problem), _settings(), DEVICE)
    after = restore(problem, _settings())
    assert torch.equal(alone.image, after.image)


@pytest.mark.real_precision_timing
def test_cli_prints_the_estimate_then_runs(run_cli, tmp_path):
    write_image(tmp_path / "in.png", Image(tiny_denoising_problem(32).y[0].permute(1, 2, 0)
                                           .double().numpy()))
    result = run_cli("denoise", tmp_path / "in.png", "--method", "dip", "--iters", "5",
                     "--sigma", "25", "--set", "net_channels=8", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert re.search(r"s/it × 5 it; (bf16|float32)[^\n]*\), peak memory ≈", result.err), \
        result.err
    explicit = run_cli("denoise", tmp_path / "in.png", "--method", "dip", "--iters", "5",
                       "--sigma", "25", "--set", "net_channels=8", "--precision", "float32",
                       "-o", tmp_path / "out2")
    assert "s/it × 5 it), peak memory ≈" in explicit.err  # nothing chosen: nothing said


def test_cli_refuses_an_image_over_a_tiny_memory_budget_in_one_line(run_cli, tmp_path):
    write_image(tmp_path / "in.png", Image(tiny_denoising_problem(32).y[0].permute(1, 2, 0)
                                           .double().numpy()))
    result = run_cli("denoise", tmp_path / "in.png", "--method", "deepred", "--sigma", "25",
                     "--max-memory", "100KB", "-o", tmp_path / "out")
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if line.startswith("deeprestore: error")]
    assert len(errors) == 1 and "--max-memory budget is 100.0 KB" in errors[0]
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------ a large image, timed on a sample
@pytest.mark.cpu_only(reason="on CUDA a step is timed at the real size")
def test_a_large_image_is_timed_on_its_centre_crop_and_scaled(monkeypatch):
    monkeypatch.setattr(timing, "TIME_PROBE_SIDE", 32)
    sizes: list[tuple[int, int]] = []
    made = timing.make_algorithm

    def spy(problem, *args, **kwargs):
        sizes.append(problem.size)
        return made(problem, *args, **kwargs)

    monkeypatch.setattr(timing, "make_algorithm", spy)
    monkeypatch.setattr(timing, "_timed", lambda call, device: 0.5)
    y = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    estimate = estimate_cost(Problem(y, Identity(), y.clone(), 25.0), _settings(), DEVICE)
    assert estimate is not None
    assert sizes[-1] == (32, 32)  # the timed algorithm: the crop, not the 64×96 image
    assert estimate.seconds_per_iteration == pytest.approx(0.5 * 64 * 96 / 32**2)
    assert estimate.timed_on == 32 and "timed on a 32² crop and scaled" in estimate.describe()


def test_the_timing_sample_is_the_centre_crop_with_its_pixel_ratio():
    image = torch.arange(600 * 300, dtype=torch.float32).reshape(1, 1, 600, 300)
    side = timing.TIME_PROBE_SIDE
    crop, scale = timing.timing_sample(image, torch.device("cpu"))
    assert tuple(crop.shape) == (1, 1, side, side)
    assert crop[0, 0, 0, 0] == image[0, 0, (600 - side) // 2, (300 - side) // 2]
    assert scale == pytest.approx(600 * 300 / side**2)
    small = image[..., :side, :side]
    assert timing.timing_sample(small, torch.device("cpu"))[1] == 1.0
    whole, one = timing.timing_sample(image.to("meta"), torch.device("cuda"))
    assert one == 1.0 and whole.shape == image.shape  # a GPU times the real size


def test_a_tile_estimate_reuses_the_whole_images_memory_probes(monkeypatch):
    y = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    big = on_device(Problem(y, Identity(), y.clone(), 25.0))
    with pytest.raises(CostError) as refused:
        estimate_cost(big, _settings(), DEVICE, max_bytes=20 * 1024**2)
    model = refused.value.model
    assert model is not None and model.probes is not None

    def no_probe(*_args, **_kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(memory, "_probe", no_probe)
    tile = on_device(Problem(y[..., :144, :144], Identity(), y[..., :144, :144].clone(), 25.0))
    again = memory.memory_model(tile, _settings(), DEVICE, probes=model.probes)
    assert again.probes == model.probes and again.peak < model.peak


def _photo(tmp_path, side: int = 32):
    path = tmp_path / "in.png"
    write_image(path, Image(tiny_denoising_problem(side).y[0].permute(1, 2, 0).double().numpy()))
    return path


def test_a_run_over_max_minutes_names_what_fits(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "_timed", lambda call, device: 30.0)  # 30 s a step or call
    result = run_cli("denoise", _photo(tmp_path), "--method", "deepred", "--sigma", "25",
                     "--iters", "400", "--max-minutes", "60", "-o", tmp_path / "out")
    assert result.code == 1, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("deeprestore: error")]
    assert len(errors) == 1 and "more than --max-minutes 60" in errors[0], result.err
    line = errors[0]
    assert "Instead: --method nlm (one pass, about 30 s, fits)" in line
    assert "--method bm3d (one pass" in line and "a GPU (--device cuda)" in line
    # 400 steps of 30 s + calls: about 100 of them fit in an hour
    fitting = int(line.split("--iters ")[1].split(" ")[0])
    assert 50 < fitting < 120
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_max_minutes_a_run_over_a_day_is_refused(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "_timed", lambda call, device: 1000.0)
    result = run_cli("denoise", _photo(tmp_path), "--method", "dip", "--sigma", "25",
                     "--iters", "200", "-o", tmp_path / "out")
    assert result.code == 1
    assert "more than --max-minutes 1440" in result.err and "Instead:" in result.err
    assert "--method nlm" in result.err


def test_a_tiled_run_over_max_minutes_names_what_fits(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "_timed", lambda call, device: 30.0)
    result = run_cli("deblur", _photo(tmp_path, 64), "--method", "dip", "--kernel", "uniform9",
                     "--sigma", "1", "--iters", "100", "--tile", "32", "--max-minutes", "1",
                     "-o", tmp_path / "out")
    assert result.code == 1, result.err
    assert "tiles would take about" in result.err and "Instead: a GPU (--device cuda)" in result.err
    assert "--method nlm" not in result.err  # deblurring has no one-shot denoiser


def test_the_optimiser_imports_are_preloaded_in_a_thread_that_finishes():
    import sys

    from deeprestore.execution import preload_optimizer_imports

    thread = preload_optimizer_imports()
    assert not thread.daemon  # an exit mid-import must wait for it
    thread.join(timeout=120)
    assert not thread.is_alive() and "torch._dynamo" in sys.modules
