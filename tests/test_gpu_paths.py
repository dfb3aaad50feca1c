"""What a GPU run does differently, checked where a CPU can check it.

The backends' global switches (cuDNN autotuning, TF32) are set for a run and put back after it,
TF32 only around the network's passes; the cost estimate is timed with the run's switches; the
per-step perturbation of z comes from the run's CPU generator on a CPU and from a device generator
elsewhere, and a saved state from another device type's generator is one line, not a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_problems import DEVICE, on_device, tiny_denoising_problem

from deeprestore.apps.jobs import Job, save_checkpoint
from deeprestore.arrays import Image
from deeprestore.config.settings import Settings
from deeprestore.execution import configured_backends, network_arithmetic
from deeprestore.io.writers import write_image
from deeprestore.solvers import cost, timing
from deeprestore.solvers.control import RunControl
from deeprestore.solvers.perturbation import PerturbationStream
from deeprestore.solvers.runner import restore
from deeprestore.tasks.options import TaskOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA = torch.device("cuda")


def _flags() -> tuple[bool, bool, bool]:
    return (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)


@contextlib.contextmanager
def _unusual_flags() -> Iterator[tuple[bool, bool, bool]]:
    """Switches an API caller might have set (none of them the run's), put back after."""
    saved = _flags()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield _flags()
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved


def test_a_cuda_run_sets_the_switches_and_puts_them_back():
    with _unusual_flags() as before:
        with configured_backends(CUDA, "tf32"):
            # autotuning on; TF32 off for everything but the network's own passes
            assert _flags() == (True, False, False)
            with network_arithmetic(CUDA, "tf32"):
                assert _flags() == (True, True, False)  # convolutions only, never matmuls
            assert _flags() == (True, False, False)
            with network_arithmetic(CUDA, "float32"):
                assert _flags() == (True, False, False)
        assert _flags() == before


def test_cpu_runs_leave_the_switches_alone():
    cpu = torch.device("cpu")
    with _unusual_flags() as before, configured_backends(cpu, "tf32"), \
            network_arithmetic(cpu, "tf32"):
        assert _flags() == before


def test_a_restore_puts_the_callers_switches_back():
    settings = Settings(method="dip", iterations=3, net_channels=8, skip_channels=2).validate()
    with _unusual_flags() as before:
        restore(tiny_denoising_problem(), settings, device=DEVICE)
        assert _flags() == before


def test_the_estimate_is_timed_with_the_runs_switches(monkeypatch):
    entered: list[str] = []

    @contextlib.contextmanager
    def recording(device: torch.device, precision: str) -> Iterator[None]:
        entered.append(precision)
        yield
        entered.append("left")

    def timed(call, device):
        assert entered == ["tf32"], "timed outside the run's backend switches"
        call()
        return 0.01

    monkeypatch.setattr(cost, "configured_backends", recording)
    monkeypatch.setattr(timing, "_timed", timed)
    settings = Settings(method="dip", iterations=3, net_channels=8, skip_channels=2,
                        precision="tf32").validate()
    cost.estimate_cost(on_device(tiny_denoising_problem()), settings, DEVICE)
    assert entered == ["tf32", "left"]


def _draws(stream: PerturbationStream, count: int) -> list[torch.Tensor]:
    return [stream.next().cpu().clone() for _ in range(count)]


@pytest.mark.cpu_only("the CPU stream continues the run's CPU generator")
def test_on_a_cpu_the_perturbation_is_the_cpu_generators_numbers():
    shape = (1, 4, 8, 8)
    reference = torch.Generator().manual_seed(7)
    expected = [torch.randn(shape, generator=reference) for _ in range(5)]
    stream = PerturbationStream(torch.Generator().manual_seed(7), shape, torch.float32, DEVICE)
    assert all(torch.equal(a, b) for a, b in zip(_draws(stream, 5), expected, strict=True))


def test_the_perturbation_state_continues_the_same_draws():
    shape = (1, 2, 4, 4)
    stream = PerturbationStream(torch.Generator().manual_seed(3), shape, torch.float32,
                                DEVICE, seed=3)
    _draws(stream, 2)
    state = stream.get_state()
    assert state["device_type"] == DEVICE.type
    rest = _draws(stream, 3)
    again = PerturbationStream(torch.Generator(), shape, torch.float32, DEVICE, seed=11)
    again.set_state(state)
    assert all(torch.equal(a, b) for a, b in zip(_draws(again, 3), rest, strict=True))


def test_a_generator_state_of_another_kind_is_refused_in_one_line():
    stream = PerturbationStream(torch.Generator(), (1, 1, 2, 2), torch.float32, DEVICE)
    other = "cuda" if DEVICE.type == "cpu" else "cpu"
    with pytest.raises(ValueError, match=f"drawn on a {other} device") as refused:
        stream.set_state({"device_type": other, "state": torch.zeros(16, dtype=torch.uint8)})
    assert "\n" not in str(refused.value)
    if DEVICE.type == "cpu":  # an older checkpoint held a bare state: CUDA's Philox is 16 bytes
        with pytest.raises(ValueError, match="not the 5056 of a cpu generator"):
            stream.set_state(torch.zeros(16, dtype=torch.uint8))


def test_a_cpu_state_is_refused_by_a_run_on_another_device_type(monkeypatch):
    """The other direction, with the run's device type claimed (no GPU here): a CPU
    checkpoint does not continue on a GPU, in one line."""
    cpu = PerturbationStream(torch.Generator().manual_seed(1), (1, 1, 2, 2), torch.float32,
                             torch.device("cpu"))
    state = cpu.get_state()
    monkeypatch.setattr(cpu, "kind", "cuda")
    with pytest.raises(ValueError, match="drawn on a cpu device and this run is on cuda"):
        cpu.set_state(state)


@pytest.mark.parametrize("foreign", ["bare-16-bytes", "cuda-made"])
def test_resuming_a_checkpoint_with_another_generator_kind_is_one_line(run_cli, tmp_path,
                                                                       foreign):
    image = tmp_path / "in.png"
    write_image(image, Image(np.random.default_rng(0).random((16, 16, 3))))
    out = tmp_path / "out"
    settings = Settings(method="dip", iterations=6, log_every=2, net_channels=8,
                        skip_channels=2, sigma_f=None).validate()
    saved: list[dict] = []
    restore(tiny_denoising_problem(), settings, device=DEVICE,
            control=RunControl(checkpoint=saved.append, checkpoint_every=2))
    state = saved[0]
    for run in state["algorithm"]["runs"]:
        cuda_state = torch.zeros(16, dtype=torch.uint8)  # CUDA's generator: 16 bytes
        run["noise_generator"] = (cuda_state if foreign == "bare-16-bytes" else
                                  {"device_type": "cuda", "state": cuda_state})
    args = ("denoise", image, "-m", "dip", "--iters", "6", "--set", "net_channels=8",
            "--set", "skip_channels=2", "--set", "log_every=2", "--sigma", "25", "-q",
            "--no-compare", "-o", out)
    # the checkpoint file the job would write for these settings, with the foreign state
    assert run_cli(*args, "--checkpoint-every", "2").code == 0
    manifest_settings = _job_settings(out / "in_dip.json")
    job = Job(input=image, output_dir=out, method="dip", settings=manifest_settings,
              task=TaskOptions("denoise", sigma=25.0), preset="denoise")
    save_checkpoint(job, state)
    result = run_cli(*args, "--resume", "--overwrite")
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert "in_dip.ckpt" in lines[0] and "cannot continue from the saved state" in lines[0]


def _job_settings(manifest: Path) -> Settings:
    import json

    return Settings(**json.loads(manifest.read_text())["parameters"]).validate()


def test_the_budget_plan_stops_measuring_at_half_the_budget(tmp_path, demo_pair, monkeypatch):
    """On a GPU each estimate costs seconds (cuDNN autotunes every new shape): on the H200 the
    plan of the full denoise table took the whole 51 s budget. It now measures until half the
    budget is gone and lists the rest as not estimated."""
    import deeprestore.apps.reproduce.plan as plan_module
    from deeprestore.apps.reproduce import ReproduceOptions, reproduce_table
    from deeprestore.solvers.cost import CostEstimate

    clean, _ = demo_pair
    data = tmp_path / "data"
    write_image(data / "cbm3d9" / "house.png", Image(clean[:32, :32]))
    clock = {"now": 0.0}

    def slow_estimate(problem, settings, device, **kwargs):
        clock["now"] += 40.0  # one estimate: 40 of the budget's 60 s
        return CostEstimate(0.01, 0.0, settings.iterations, 0, 1, None)

    monkeypatch.setattr(plan_module, "estimate_cost", slow_estimate)
    events: list = []
    options = ReproduceOptions(methods=["dip", "dip-tv", "deepred"], images=["house"],
                               quick=True, iterations=2, device=DEVICE, seed=0, command="test",
                               budget_minutes=1, clock=lambda: clock["now"])
    reproduce_table("denoise", data, tmp_path / "out", options, progress=events.append)
    plan = {e.method: e.message for e in events if e.kind == "plan"}
    assert "so far of" in plan["dip"]  # measured: the budget was untouched
    for method in ("dip-tv", "deepred"):
        assert "not estimated (the plan stopped measuring at half the budget)" in plan[method]
