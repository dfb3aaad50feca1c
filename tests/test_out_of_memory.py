"""Out of device memory anywhere is one line, nothing half-written, and the rest goes on.

A CPU cannot run out of GPU memory, so these tests raise ``torch.cuda.OutOfMemoryError`` (what
CUDA raises) with monkeypatch from the places a GPU run can: the cost estimate, a denoiser
call, a network step, a grouped step. They also check what the GPU-only memory code computes
from the allocator's figures (monkeypatched ``torch.cuda`` functions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_problems import DEVICE, on_device, tiny_denoising_problem

from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.io.writers import write_image
from deeprestore.solvers import cost, grouping, memory, timing
from deeprestore.solvers.cost import CostError, estimate_cost
from deeprestore.solvers.memory import available_memory
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.runner import restore_together
from deeprestore.solvers.schedule import DenoiserSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ("--iters", "3", "--set", "net_channels=8", "--set", "skip_channels=2", "-q",
        "--no-compare", "--sigma", "25")


def _out_of_memory(*_args, **_kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _two_inputs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        write_image(path, Image(rng.uniform(0.2, 0.8, (32, 32, 3))))
        paths.append(path)
    return paths


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("deeprestore: error:")]
    assert len(errors) == 1, err
    return errors[0]


def _outputs(folder: Path, stem: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{stem}_*") if not p.name.endswith(".failed.json"))


def test_out_of_memory_during_the_estimate_is_one_line_and_the_batch_goes_on(
        run_cli, tmp_path, monkeypatch):
    first, second = _two_inputs(tmp_path)
    real = cost._timed_estimate
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            _out_of_memory()
        return real(*args, **kwargs)

    monkeypatch.setattr(cost, "_timed_estimate", fails_once)
    out = tmp_path / "out"
    result = run_cli("denoise", first, second, "-m", "dip", "-o", out, *FAST)
    assert result.code == 1
    line = _one_error_line(result.err)
    assert "a.png" in line and "ran out of memory" in line and "while measuring" in line
    assert _outputs(out, "a") == []  # nothing half-written for the failed image
    assert (out / "b_dip.png").exists() and (out / "b_dip.json").exists()


def test_out_of_memory_in_a_denoiser_call_is_one_line_naming_a_tile(
        run_cli, tmp_path, monkeypatch):
    first, _ = _two_inputs(tmp_path)
    monkeypatch.setattr(DenoiserSchedule, "call", _out_of_memory)
    monkeypatch.setattr(cost, "_timed_estimate", lambda *a, **k: None)  # reach the run
    out = tmp_path / "out"
    result = run_cli("denoise", first, "-m", "deepred", "-o", out, *FAST,
                     "--set", "denoise_every=1")
    assert result.code == 1
    line = _one_error_line(result.err)
    assert "ran out of memory" in line and "--tile" in line
    assert _outputs(out, "a") == []
    failure = json.loads((out / "a_deepred.failed.json").read_text())
    assert "ran out of memory" in failure["error"]


def test_out_of_memory_in_a_network_step_is_one_line(run_cli, tmp_path, monkeypatch):
    first, _ = _two_inputs(tmp_path)
    monkeypatch.setattr(NetworkAlgorithm, "_theta_step", _out_of_memory)
    monkeypatch.setattr(cost, "_timed_estimate", lambda *a, **k: None)
    out = tmp_path / "out"
    result = run_cli("denoise", first, "-m", "dip", "-o", out, *FAST)
    assert result.code == 1
    assert "ran out of memory" in _one_error_line(result.err)
    assert _outputs(out, "a") == []


def test_the_estimates_advice_is_a_tile_smaller_than_the_image():
    model = memory.MemoryModel(fixed=0.0, per_pixel=1.0, peak=10**9)
    message, side = cost._out_of_memory_advice(model, 10**9, torch.device("cuda"), 1024)
    assert side == 512 and "--tile 512" in message  # the model alone would say ~31000 px
    message, side = cost._out_of_memory_advice(None, 10**9, torch.device("cuda"), 1024)
    assert side is None and "--device cpu" in message
    message, side = cost._out_of_memory_advice(model, 10**9, torch.device("cuda"), 100)
    assert side is None  # half of 100 px is under the 64 px minimum


def test_an_estimate_that_runs_out_of_memory_raises_cost_error(monkeypatch):
    monkeypatch.setattr(timing, "_timed", _out_of_memory)
    settings = Settings(method="dip", iterations=5, net_channels=8, skip_channels=2).validate()
    with pytest.raises(CostError, match="ran out of memory"):
        estimate_cost(on_device(tiny_denoising_problem()), settings, DEVICE)


def test_cuda_memory_counts_pytorchs_cached_blocks_as_available(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * gib)
    # free 2 GiB + 7 GiB held by the cache but unused (mem_get_info counts them as taken)
    assert available_memory(torch.device("cuda")) == 9 * gib


def test_the_cuda_memory_measure_leaves_out_the_warm_up(monkeypatch):
    mib = 1024**2
    state = {"allocated": 100 * mib, "peak": 100 * mib}

    def allocate(size: int, keep: int) -> None:
        state["peak"] = max(state["peak"], state["allocated"] + size)
        state["allocated"] += keep

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: state.update(peak=state["allocated"]))
    # the warm-up keeps 50 MiB (the state) and autotunes with 4 GiB of workspace; the step
    # needs 300 MiB of activations and workspace on top of the state
    measured = memory.measured_bytes(torch.device("cuda"), lambda: allocate(300 * mib, 0),
                                     warm_up=lambda: allocate(4096 * mib, 50 * mib))
    assert measured == 350 * mib


def _group_settings(method: str, seed: int) -> Settings:
    extra = {"lam": 0.0, "mu": 0.5} if method == "deepred" else {}
    return Settings(method=method, iterations=6, log_every=2, net_channels=8, skip_channels=2,
                    seed=seed, **extra).validate()  # type: ignore[arg-type]


def test_a_grouped_step_out_of_memory_halves_the_group_and_changes_no_result(monkeypatch):
    problems = [tiny_denoising_problem() for _ in range(4)]
    settings = [_group_settings(m, seed) for seed, m in enumerate(["dip", "dip", "deepred",
                                                                   "dip-tv"])]
    # the failed attempt leaves no trace: the result is that of two groups of two from the start
    halves = [*restore_together(problems[:2], settings[:2], device=DEVICE),
              *restore_together(problems[2:], settings[2:], device=DEVICE)]
    real = grouping.ProblemGroup._adam
    sizes: list[int] = []

    def too_big(self, skips, grads):
        sizes.append(len(self.members))
        if len(self.members) > 2:  # four problems do not fit, two do: out of memory after
            _out_of_memory()  # the forward and backward passes (draws taken, statistics moved)
        real(self, skips, grads)

    monkeypatch.setattr(grouping.ProblemGroup, "_adam", too_big)
    notices: list[str] = []
    together = restore_together(problems, settings, device=DEVICE, notice=notices.append)
    assert sizes[0] == 4 and max(sizes[1:]) == 2
    assert notices == ["out of memory with 4 problems per step: continuing as groups of 2 "
                       "and 2"]
    for half, grouped in zip(halves, together, strict=True):
        assert not isinstance(grouped, BaseException) and not isinstance(half, BaseException)
        if DEVICE.type == "cpu":
            assert torch.equal(grouped.image, half.image)
        else:  # cuDNN's autotuning may pick other algorithms in the two runs (seen on an
            # H200: 2.5e-4 and 2e-3 apart after 6 iterations)
            torch.testing.assert_close(grouped.image, half.image, rtol=0, atol=1e-2)


def test_a_problem_out_of_memory_alone_fails_alone(monkeypatch):
    problems = [tiny_denoising_problem() for _ in range(2)]
    settings = [_group_settings("dip", seed) for seed in range(2)]
    real = NetworkAlgorithm.update

    def second_fails(self):
        if self.settings.seed == 1 and self.iteration == 2:
            _out_of_memory()
        return real(self)

    monkeypatch.setattr(NetworkAlgorithm, "update", second_fails)
    first, second = restore_together(problems, settings, device=DEVICE)
    assert isinstance(second, torch.OutOfMemoryError)
    assert not isinstance(first, BaseException) and first.iterations == 6


def test_a_group_over_the_memory_is_stepped_in_smaller_groups(tmp_path, monkeypatch):
    from deeprestore.apps import jobs
    from deeprestore.apps.jobs import prepare, run
    from deeprestore.tasks.options import TaskOptions

    paths = _two_inputs(tmp_path) + [tmp_path / "c.png"]
    write_image(paths[2], Image(np.full((32, 32, 3), 0.5)))
    made = [jobs.Job(input=path, output_dir=tmp_path / "out", method="dip",
                     settings=_group_settings("dip", k), task=TaskOptions("denoise", sigma=25.0),
                     preset="denoise", device=DEVICE, compare=False)
            for k, path in enumerate(paths)]
    peaks: list[int] = []
    real = prepare.estimate_cost

    def recorded(*args, **kwargs):
        estimate = real(*args, **kwargs)
        peaks.append(estimate.peak_bytes)
        return estimate

    monkeypatch.setattr(prepare, "estimate_cost", recorded)
    # room for two of the three problems at a time
    monkeypatch.setattr(run, "available_memory", lambda device: int(2.5 * max(peaks)))
    groups: list[int] = []
    real_together = run.restore_together

    def counted(problems, *args, **kwargs):
        groups.append(len(problems))
        return real_together(problems, *args, **kwargs)

    monkeypatch.setattr(run, "restore_together", counted)
    notices: list[str] = []
    outcomes = jobs.run_jobs_together(made, notice=notices.append)
    assert groups == [2, 1]
    assert [o.grouped_with for o in outcomes] == [2, 2, 1]  # type: ignore[union-attr]
    assert any("stepping them in 2 groups of at most 2" in text for text in notices)
