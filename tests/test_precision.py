"""``precision = "auto"`` (issue 34): bf16 where a step measures ≥ 1.25× faster, else float32;
the layout follows the precision; the choice is printed and recorded.

The timings are replaced (``timing.step_seconds``) so that both branches run on any CPU; the
real timing is exercised by the CLI runs that do not replace it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_problems import DEVICE, DEVICE_NAME, ON_CPU, tiny_denoising_problem

import deeprestore.execution as execution
import deeprestore.solvers.timing as timing
from deeprestore.config.settings import Settings
from deeprestore.execution import Execution, channels_last
from deeprestore.models.skip import ReflectionPad
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.precision import (
    BF16_MIN_SPEEDUP,
    PrecisionChoice,
    candidates,
    decide,
)
from deeprestore.solvers.runner import restore

CPU = torch.device("cpu")


def _fake_timings(monkeypatch, bf16_speedup: float, calls: list | None = None) -> None:
    """Make every timed step take 0.3 s in float32 and 0.3 / ``bf16_speedup`` s in bf16."""

    def fake(problem, settings, device, execution, precisions):
        if calls is not None:
            calls.append(tuple(precisions))
        return {p: ((0.3 / bf16_speedup if p == "bf16" else 0.3), 0) for p in precisions}

    monkeypatch.setattr(timing, "step_seconds", fake)
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: True)


@pytest.mark.parametrize("speedup, chosen", [(BF16_MIN_SPEEDUP, "bf16"), (3.0, "bf16"),
                                             (1.2, "float32"), (0.07, "float32")])
def test_bf16_is_chosen_only_at_least_the_threshold_faster(speedup, chosen):
    choice = decide({"float32": 1.0, "bf16": 1.0 / speedup})
    assert choice.precision == chosen and choice.requested == "auto"
    assert choice.bf16_speedup == pytest.approx(speedup)
    assert ("bf16, measured" in choice.describe()) is (chosen == "bf16")


def test_nothing_is_timed_where_there_is_no_choice(monkeypatch):
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: True)
    assert candidates(Settings(method="dip", precision="auto"), CPU) == ("float32", "bf16")
    explicit = candidates(Settings(method="dip", precision="bf16"), CPU)
    assert isinstance(explicit, PrecisionChoice) and explicit.precision == "bf16"
    for settings, device in [(Settings(method="dip", precision="auto"), torch.device("cuda")),
                             (Settings(method="nlm", precision="auto"), CPU)]:
        choice = candidates(settings, device)
        assert isinstance(choice, PrecisionChoice) and choice.precision == "float32"
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: False)
    choice = candidates(Settings(method="dip", precision="auto"), CPU)
    assert isinstance(choice, PrecisionChoice) and choice.precision == "float32"
    assert "no bf16 arithmetic" in choice.describe()


def test_the_layout_follows_the_precision():
    assert channels_last(CPU, "bf16") and not channels_last(CPU, "float32")
    assert channels_last(torch.device("cuda"), "float32")
    assert not channels_last(CPU, "bf16", Execution(cpu_channels_last=False))
    assert channels_last(CPU, "float32", Execution(cpu_channels_last=True))
    problem = tiny_denoising_problem(size=32)
    for precision, expected in [("bf16", True), ("float32", False)]:
        algorithm = make_algorithm(problem, Settings(method="dip", iterations=1,
                                                     precision=precision), CPU)
        weight = next(p for p in algorithm.runs[0].net.parameters() if p.dim() == 4
                      and p.shape[-1] == 3)
        assert weight.is_contiguous(memory_format=torch.channels_last) is expected
        assert not weight.is_contiguous() if expected else weight.is_contiguous()
        algorithm.close()


def test_an_unresolved_auto_never_reaches_an_algorithm():
    with pytest.raises(ValueError, match="resolved before"):
        make_algorithm(tiny_denoising_problem(size=32), Settings(method="dip", precision="auto"),
                       CPU)


def test_padding_keeps_bf16_under_autocast_and_equals_torchs():
    x = torch.rand(1, 4, 9, 7).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded = ReflectionPad(1)(x)
    assert padded.dtype == torch.bfloat16  # torch's own pad would come back float32 here
    assert torch.equal(padded, torch.nn.ReflectionPad2d(1)(x))


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
@pytest.mark.parametrize("speedup, chosen", [(2.5, "bf16"), (1.1, "float32")])
def test_the_solver_resolves_auto_and_records_it(monkeypatch, speedup, chosen):
    calls: list = []
    _fake_timings(monkeypatch, speedup, calls)
    result = restore(tiny_denoising_problem(size=32), Settings(method="dip", iterations=2,
                                                             precision="auto"))
    assert calls == [("float32", "bf16")]  # timed once, both candidates
    assert result.precision is not None and result.precision["used"] == chosen
    assert result.precision["bf16_speedup"] == pytest.approx(speedup, rel=1e-3)
    explicit = restore(tiny_denoising_problem(size=32), Settings(method="dip", iterations=2))
    assert explicit.precision is None and len(calls) == 1  # float32 asked: nothing timed


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
@pytest.mark.parametrize("speedup, chosen", [(3.0, "bf16"), (1.1, "float32")])
def test_a_photo_without_flags_says_and_records_the_choice(run_cli, tiny_images, tmp_path: Path,
                                                           monkeypatch, speedup, chosen):
    _fake_timings(monkeypatch, speedup)
    done = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "--iters", "2", "--sigma", "25",
                   "--no-compare", "-o", tmp_path / "out")
    assert done.code == 0, done.err
    expected = (f"bf16, measured {speedup:.2g}× float32's speed" if chosen == "bf16"
                else f"float32 (bf16 measured {speedup:.2g}× its speed, under 1.25×)")
    assert expected in done.err
    manifest = json.loads((tmp_path / "out" / "noisy_dip.json").read_text())
    assert manifest["parameters"]["precision"] == chosen
    assert manifest["precision"]["used"] == chosen
    assert manifest["precision"]["requested"] == "auto"
    assert manifest["precision"]["bf16_speedup"] == pytest.approx(speedup, rel=1e-3)


def test_a_cpu_without_bf16_keeps_float32_quietly(run_cli, tiny_images, tmp_path: Path,
                                                 monkeypatch):
    calls: list = []

    def no_timing(*args):
        calls.append(args)
        raise AssertionError("nothing should be timed for auto here")

    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: False)
    real = timing.step_seconds
    monkeypatch.setattr(timing, "step_seconds", lambda problem, settings, device, ex, precisions: (
        no_timing() if len(precisions) > 1 else real(problem, settings, device, ex, precisions)))
    done = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "--iters", "2", "--sigma", "25",
                   "--no-compare", "--device", DEVICE_NAME, "-o", tmp_path / "out")
    assert done.code == 0, done.err
    assert "warning" not in done.err and not calls
    manifest = json.loads((tmp_path / "out" / "noisy_dip.json").read_text())
    assert manifest["parameters"]["precision"] == "float32"
    assert manifest["precision"]["used"] == "float32"


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
def test_a_resumed_auto_run_continues_in_the_precision_it_started_in(run_cli, tmp_path,
                                                                     monkeypatch):
    import numpy as np

    from deeprestore.apps.jobs import Job, save_checkpoint
    from deeprestore.arrays import Image
    from deeprestore.io.writers import write_image
    from deeprestore.solvers.control import RunControl
    from deeprestore.tasks.options import TaskOptions

    image, out = tmp_path / "in.png", tmp_path / "out"
    write_image(image, Image(np.random.default_rng(0).random((16, 16, 3))))
    args = ("denoise", image, "-m", "dip", "--iters", "6", "--set", "net_channels=8",
            "--set", "skip_channels=2", "--set", "log_every=2", "--sigma", "25", "-q",
            "--no-compare", "-o", out)
    _fake_timings(monkeypatch, 3.0)
    assert run_cli(*args, "--checkpoint-every", "2").code == 0
    used = Settings(**json.loads((out / "in_dip.json").read_text())["parameters"])
    assert used.precision == "bf16"
    saved: list[dict] = []  # a state saved at iteration 2 of that run, as an interrupt leaves it
    restore(tiny_denoising_problem(), used,
            control=RunControl(checkpoint=saved.append, checkpoint_every=2))
    save_checkpoint(Job(input=image, output_dir=out, method="dip", settings=used,
                        task=TaskOptions("denoise", sigma=25.0), preset="denoise"), saved[0])
    _fake_timings(monkeypatch, 1.0)  # auto would pick float32 now
    again = run_cli(*args, "--resume", "--overwrite")
    assert again.code == 0, again.err
    manifest = json.loads((out / "in_dip.json").read_text())
    assert manifest["resumed_from"] == 2
    assert manifest["parameters"]["precision"] == "bf16"
    assert manifest["precision"]["reason"] == "as the checkpoint it continued"


def test_the_api_reports_the_resolved_precision(monkeypatch):
    import numpy as np

    import deeprestore

    _fake_timings(monkeypatch, 2.0)
    noisy = np.random.default_rng(0).random((32, 32, 3))
    done = deeprestore.restore(noisy, task="denoise", method="dip", sigma=25, iterations=2,
                               device=DEVICE_NAME)
    expected = "bf16" if ON_CPU else "float32"
    assert done.settings.precision == expected
    assert done.precision is not None and done.precision["used"] == expected
    assert DEVICE.type in ("cpu", "cuda")


def test_a_channels_last_concatenation_hands_dense_gradients_back(monkeypatch):
    import deeprestore.models.skip as skip

    torch.manual_seed(0)
    net = skip.SkipNet(8, 3, channels=16, skip_channels=4, scales=3)
    given, returned = [], []
    dense = skip.dense_channels_last

    def spy(grad: torch.Tensor) -> torch.Tensor:
        given.append(grad)
        returned.append(dense(grad))
        return returned[-1]

    monkeypatch.setattr(skip, "dense_channels_last", spy)
    for layout, calls in [(torch.contiguous_format, 0), (torch.channels_last, 2 * 3)]:
        given.clear()
        net = net.to(memory_format=layout)
        z = torch.rand(1, 8, 64, 64).contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(z)
        out.float().square().sum().backward()
        assert len(given) == calls  # both parts of each scale's concatenation, channels-last
    assert not any(g.is_contiguous(memory_format=torch.channels_last) for g in given)
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in returned)


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
def test_problems_stepped_together_run_in_the_first_ones_precision(tmp_path, monkeypatch):
    import numpy as np

    from deeprestore.apps.jobs import Job, run_jobs_together
    from deeprestore.arrays import Image
    from deeprestore.io.manifest import Manifest
    from deeprestore.io.writers import write_image
    from deeprestore.tasks.options import TaskOptions

    speeds = iter([3.0, 1.0])  # the first image measures bf16 3× faster, the second not

    def fake(problem, settings, device, ex, precisions):
        speed = next(speeds) if len(precisions) > 1 else 1.0
        return {p: ((0.3 / speed if p == "bf16" else 0.3), 0) for p in precisions}

    monkeypatch.setattr(timing, "step_seconds", fake)
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: True)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"in{k}.png")
        write_image(paths[-1], Image(np.random.default_rng(k).random((16, 16, 3))))
    settings = Settings(method="dip", iterations=2, precision="auto", net_channels=8,
                        skip_channels=2).validate()
    jobs = [Job(input=path, output_dir=tmp_path / "out", method="dip", settings=settings,
                task=TaskOptions("denoise", sigma=25.0), preset="denoise", compare=False)
            for path in paths]
    outcomes = run_jobs_together(jobs)
    manifests = [o for o in outcomes if isinstance(o, Manifest)]
    assert len(manifests) == 2, outcomes
    assert [m.parameters["precision"] for m in manifests] == ["bf16", "bf16"]
    assert manifests[1].precision == manifests[0].precision
    assert manifests[0].grouped_with == 2


# --- the decision kept per machine (issue 43) ------------------------------------------------


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
def test_a_rerun_beside_a_busy_process_keeps_the_first_choice(monkeypatch):
    """The same command twice on one machine: the second time the machine is busier and bf16
    measures under the threshold, yet the run keeps bf16 (decided once, kept), times only bf16
    for its cost line, and records where the decision comes from."""
    calls: list = []
    settings = Settings(method="dip", iterations=2, precision="auto")
    _fake_timings(monkeypatch, 1.6, calls)
    first = restore(tiny_denoising_problem(size=32), settings)
    _fake_timings(monkeypatch, 1.1, calls)  # a busy machine: alone this would choose float32
    second = restore(tiny_denoising_problem(size=32), settings)
    assert first.precision is not None and second.precision is not None
    assert first.precision["used"] == second.precision["used"] == "bf16"
    assert calls == [("float32", "bf16"), ("bf16",)]
    assert first.precision["decided"].startswith("measured now, kept in ")
    assert second.precision["decided"].startswith("kept since ")
    assert second.precision["bf16_speedup"] == pytest.approx(1.6, rel=1e-3)


@pytest.mark.cpu_only(reason="auto times the CPU's arithmetic; on CUDA it is float32")
def test_another_network_is_decided_anew_and_a_bad_file_is_measured_over(monkeypatch, tmp_path):
    calls: list = []
    _fake_timings(monkeypatch, 1.6, calls)
    restore(tiny_denoising_problem(size=32), Settings(method="dip", iterations=1,
                                                      precision="auto"))
    restore(tiny_denoising_problem(size=32), Settings(method="dip", iterations=1,
                                                      precision="auto", net_channels=8))
    assert calls == [("float32", "bf16")] * 2  # another network shape: another decision
    monkeypatch.setenv("DEEPRESTORE_CACHE_DIR", str(tmp_path))
    (tmp_path / "precision.json").write_text("{ not json")
    again = restore(tiny_denoising_problem(size=32), Settings(method="dip", iterations=1,
                                                              precision="auto"))
    assert calls[-1] == ("float32", "bf16") and again.precision["used"] == "bf16"
    kept = json.loads((tmp_path / "precision.json").read_text())
    assert [entry["precision"] for entry in kept.values()] == ["bf16"]


def test_an_unwritable_cache_leaves_the_decision_unkept(monkeypatch, tmp_path):
    from deeprestore.solvers import decisions

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DEEPRESTORE_CACHE_DIR", str(blocker / "below"))  # under a file
    assert decisions.keep("kind", "bf16", {"float32": 1.0, "bf16": 0.5}) is None
    assert decisions.recall("kind") is None
