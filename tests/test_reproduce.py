"""`deeprestore reproduce` API: tables, results, grids, resuming, missing images (tiny runs)."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_problems import DEVICE, DEVICE_NAME, ON_CPU

from deeprestore.apps.reproduce import (
    TABLES,
    MissingImageError,
    ReproduceError,
    ReproduceEvent,
    ReproduceOptions,
    load_benchmarks,
    reproduce_table,
)
from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.writers import write_image


@pytest.fixture
def data_dir(tmp_path: Path, demo_pair: tuple[np.ndarray, np.ndarray]) -> Path:
    """A data directory like shared/data with two 32×32 images of the denoising table."""
    clean, _ = demo_pair
    data = tmp_path / "data"
    write_image(data / "cbm3d9" / "house.png", Image(clean[:32, :32]))
    write_image(data / "cbm3d9" / "peppers.png", Image(clean[32:, 32:]))
    return data


def run(data: Path, out: Path, events: list[ReproduceEvent], **kwargs):
    options = dict(methods=["input", "nlm", "dip"], images=["house", "peppers"], quick=True,
                   iterations=2, device=DEVICE, seed=0,
                   command="deeprestore reproduce denoise --quick", progress=events.append)
    options.update(kwargs)
    progress = options.pop("progress")
    return reproduce_table("denoise", data, out, ReproduceOptions(**options), progress)


def kinds(events: list[ReproduceEvent], kind: str) -> list[tuple[str | None, str | None]]:
    return [(e.image, e.method) for e in events if e.kind == kind]


def test_benchmarks_hold_the_papers_numbers():
    tables = load_benchmarks()
    assert tuple(tables) == TABLES
    denoise = tables["denoise"]
    assert denoise.paper == {"cbm3d9": {"nlm": 29.13, "red": 29.30, "dip": 30.53,
                                        "deepred": 31.06}}
    assert len(denoise.images()) == 9
    x4, x8 = tables["superres-x4"], tables["superres-x8"]
    assert x4.paper["set5"] == {"dip": 29.95, "red": 30.23, "deepred": 30.72}
    assert x4.paper["set14"] == {"dip": 27.16, "red": 27.36, "deepred": 27.63}
    assert x8.paper["set5"] == {"dip": 25.84, "red": 25.56, "deepred": 26.04}
    assert x8.paper["set14"] == {"dip": 24.10, "red": 23.89, "deepred": 24.28}
    uniform, gauss = tables["deblur-uniform"], tables["deblur-gauss"]
    assert uniform.paper["ncsr4"] == {"input": 20.94, "dip": 30.51, "red": 30.74,
                                      "deepred": 31.22}
    assert gauss.paper["ncsr4"] == {"input": 24.43, "dip": 31.62, "red": 32.35,
                                    "deepred": 32.30}
    # per-image numbers average to the paper's set averages
    per_image = x4.per_image["set5"]["deepred"]
    assert per_image["butterfly"] == 26.33
    assert np.mean(list(per_image.values())) == pytest.approx(30.72, abs=0.01)
    per_image = uniform.per_image["ncsr4"]["deepred"]
    assert np.mean(list(per_image.values())) == pytest.approx(31.22, abs=0.01)
    assert tables["inpaint"].paper == {"set5": {}}
    for bench in tables.values():
        assert bench.quick_preset.endswith("-quick")


def test_reproduce_writes_results_grids_and_resumes(tmp_path: Path, data_dir: Path):
    out = tmp_path / "out"
    events: list[ReproduceEvent] = []
    md = run(data_dir, out, events)
    assert md == out / "denoise" / "results.md"
    assert len(kinds(events, "done")) == 4 and not kinds(events, "skip")
    assert any(e.kind == "iteration" and e.engine is not None for e in events)

    with (out / "denoise" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["image"], r["method"]) for r in rows] == [
        ("house", "input"), ("house", "nlm"), ("house", "dip"),
        ("peppers", "input"), ("peppers", "nlm"), ("peppers", "dip")]
    assert all(r["status"] == "ok" and float(r["psnr"]) > 0 for r in rows)
    assert {r["paper_psnr"] for r in rows} == {""}  # no per-image paper numbers for denoising
    nlm = next(r for r in rows if r["method"] == "nlm")
    assert float(nlm["psnr"]) > float(rows[0]["psnr"])  # NLM improves on the noisy input
    assert rows[2]["iterations"] == "2" and rows[2]["device"] == DEVICE_NAME

    text = md.read_text()
    assert "NOT comparable to the paper" in text
    assert "deeprestore reproduce denoise --quick" in text
    assert "| NLM |" in text and "| 29.13 |" in text and "2/9" in text
    assert f"torch {torch.__version__}" in text

    image_dir = out / "denoise" / "house"
    for name in ("clean.png", "input.png", "input.json", "input_nlm.json", "input_dip.png"):
        assert (image_dir / name).exists(), name
    assert read_image(image_dir / "input.png").pixels.shape == (32, 32, 3)
    grid = read_image(image_dir / "grid.png")
    assert grid.width > 4 * 32  # input, NLM, DIP and the reference side by side

    # a rerun skips everything and rewrites nothing
    manifests = sorted(out.glob("denoise/*/input_*.json"))
    mtimes = [p.stat().st_mtime_ns for p in manifests]
    events.clear()
    run(data_dir, out, events)
    assert len(kinds(events, "skip")) == 4 and not kinds(events, "start")
    assert [p.stat().st_mtime_ns for p in manifests] == mtimes

    # changed settings redo only what they change
    events.clear()
    run(data_dir, out, events, images=["house"], iterations=3)
    assert kinds(events, "done") == [("house", "dip")]
    assert kinds(events, "skip") == [("house", "nlm")]


def test_interrupted_run_continues(tmp_path: Path, data_dir: Path):
    out = tmp_path / "out"
    events: list[ReproduceEvent] = []

    def stop_after_first(event: ReproduceEvent) -> None:
        events.append(event)
        if event.kind == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(data_dir, out, events, methods=["nlm"], progress=stop_after_first)
    assert (out / "denoise" / "results.csv").exists()  # partial results are written
    events.clear()
    run(data_dir, out, events, methods=["nlm"])
    assert kinds(events, "skip") == [("house", "nlm")]
    assert kinds(events, "done") == [("peppers", "nlm")]


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_a_signal_mid_pair_leaves_a_checkpoint_the_same_command_resumes(
        tmp_path: Path, data_dir: Path):
    # SIGTERM at iteration 10 of 30 (the quick preset logs every 10): the pair's state is
    # saved; the rerun says it resumed and ends bit-identical to a run never interrupted.
    import os
    import signal

    from deeprestore.solvers.control import Interrupted

    settings = dict(methods=["dip"], images=["house"], iterations=30)
    events: list[ReproduceEvent] = []

    def stop_at_10(event: ReproduceEvent) -> None:
        events.append(event)
        if event.kind == "iteration" and event.engine is not None and \
                event.engine.iteration == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "out"
    with pytest.raises(Interrupted) as info:
        run(data_dir, out, events, progress=stop_at_10, **settings)
    checkpoint = out / "denoise" / "house" / "input_dip.ckpt"
    assert info.value.checkpoint == checkpoint and checkpoint.exists()
    assert info.value.hint == "rerun the same command to continue"
    events.clear()
    run(data_dir, out, events, **settings)
    assert [e.message for e in events if e.kind == "note"] == ["resumed from its checkpoint"]
    assert kinds(events, "done") == [("house", "dip")] and not checkpoint.exists()
    whole = tmp_path / "whole"
    run(data_dir, whole, [], **settings)
    resumed = read_image(out / "denoise" / "house" / "input_dip.png").pixels
    assert np.array_equal(resumed, read_image(whole / "denoise" / "house" / "input_dip.png").pixels)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path, data_dir: Path):
    import os
    import signal

    from deeprestore.solvers.control import Interrupted

    def stop_at_10(event: ReproduceEvent) -> None:
        if event.kind == "iteration" and event.engine is not None and \
                event.engine.iteration == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        run(data_dir, out, [], methods=["dip"], images=["house"], iterations=20,
            progress=stop_at_10)
    events: list[ReproduceEvent] = []
    run(data_dir, out, events, methods=["dip"], images=["house"], iterations=20, runs=2)
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and "made with other settings" in notes[0]
    assert notes[0].endswith("started over")
    assert kinds(events, "done") == [("house", "dip")]


def test_missing_image_is_named(tmp_path: Path, data_dir: Path):
    (data_dir / "cbm3d9" / "peppers.png").unlink()
    with pytest.raises(MissingImageError) as info:
        run(data_dir, tmp_path / "out", [])
    message = str(info.value)
    assert "cbm3d9/peppers.png not found in" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing ran


def test_skip_missing_marks_rows(tmp_path: Path, data_dir: Path):
    (data_dir / "cbm3d9" / "peppers.png").unlink()
    events: list[ReproduceEvent] = []
    md = run(data_dir, tmp_path / "out", events, methods=["nlm"], skip_missing=True)
    assert [e.message for e in events if e.kind == "missing"] == [
        f"cbm3d9/peppers.png not found in {data_dir}: skipped"]
    with (md.parent / "results.csv").open() as handle:
        status = {r["image"]: r["status"] for r in csv.DictReader(handle)}
    assert status == {"house": "ok", "peppers": "missing"}
    text = md.read_text()
    assert "| cbm3d9/peppers.png | missing |" in text and "## Warnings" in text


def test_bad_requests_are_one_line_errors(tmp_path: Path, data_dir: Path):
    with pytest.raises(ReproduceError, match="unknown table 'denoising'"):
        reproduce_table("denoising", data_dir, tmp_path)
    with pytest.raises(ReproduceError, match="method 'bicubic' is not in table denoise"):
        reproduce_table("denoise", data_dir, tmp_path, ReproduceOptions(methods=["bicubic"]))
    with pytest.raises(ReproduceError, match="image 'zebra' is not in table denoise"):
        reproduce_table("denoise", data_dir, tmp_path, ReproduceOptions(images=["zebra"]))
    with pytest.raises(ReproduceError, match="image 'nothing' is in no table"):
        reproduce_table("all", data_dir, tmp_path, ReproduceOptions(images=["nothing"]))
    with pytest.raises(ReproduceError, match="data directory"):
        reproduce_table("denoise", tmp_path / "absent", tmp_path)


def test_labels_name_the_denoiser_that_ran(tmp_path: Path, demo_pair):
    x4 = load_benchmarks()["superres-x4"]
    assert x4.label("red", "nlm") == "RED (NLM)"
    assert x4.label("red", "bm3d-torch") == "RED (BM3D, torch)"
    assert x4.label("deepred", "bm3d") == "DeepRED (BM3D)"
    assert x4.label("dip", "nlm") == "DIP"
    # the paper's x4 row uses BM3D; the quick preset runs NLM, and the table must say so
    write_image(tmp_path / "data" / "set5" / "baby.png", Image(demo_pair[0][:32, :32]))
    md = reproduce_table("superres-x4", tmp_path / "data", tmp_path / "out", ReproduceOptions(
        methods=["red"], images=["baby"], quick=True, iterations=2, device=DEVICE, seed=0,
        command="test"))
    text = md.read_text()
    ran = "RED (NLM)" if ON_CPU else "RED (NLM, torch)"  # --denoiser auto: torch's on CUDA
    assert f"| {ran} |" in text and "RED (BM3D" not in text


def test_a_diverging_job_fails_alone_and_the_table_goes_on(data_dir, tmp_path, monkeypatch):
    import deeprestore.apps.reproduce.table as reproduce_module

    real_run_job = reproduce_module.run_job

    def diverge_on_house_dip(job, callback=None):
        if job.method == "dip" and job.input.parent.name == "house":
            raise FloatingPointError("the loss became nan at iteration 2 after 3 rollbacks")
        return real_run_job(job, callback=callback)

    monkeypatch.setattr(reproduce_module, "run_job", diverge_on_house_dip)
    events: list[ReproduceEvent] = []
    out = tmp_path / "out"
    run(data_dir, out, events)
    assert kinds(events, "failed") == [("house", "dip")]
    assert ("peppers", "dip") in kinds(events, "done")
    record = out / "denoise" / "house" / "input_dip.failed.json"
    assert "nan" in record.read_text()
    monkeypatch.setattr(reproduce_module, "run_job", real_run_job)
    run(data_dir, out, events := [])
    assert ("house", "dip") in kinds(events, "done") and not record.exists()


class _Ticks:
    """A clock that advances one second per reading (so a budget counts readings)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.cpu_only(reason="bit-identical resume")
def test_a_budget_prints_the_plan_stops_inside_it_and_the_rerun_ends_as_one_whole_run(
        tmp_path: Path, data_dir: Path, monkeypatch):
    from deeprestore.apps.reproduce import BudgetSpent

    settings = dict(methods=["nlm", "dip"], images=["house", "peppers"], iterations=12)
    events: list[ReproduceEvent] = []
    out = tmp_path / "out"
    # 20 readings: the plan and house's two pairs (12 iterations, one reading each) fit,
    # peppers' dip runs out part-way and keeps its state
    with pytest.raises(BudgetSpent, match="rerun the same command") as info:
        run(data_dir, out, events, budget_minutes=20 / 60, clock=_Ticks(), **settings)
    plan = [(e.image, e.method) for e in events if e.kind == "plan"]
    assert plan == [("house", "nlm"), ("house", "dip"), ("peppers", "nlm"), ("peppers", "dip")]
    assert all("so far of" in e.message for e in events if e.kind == "plan")
    assert kinds(events, "done") == [("house", "nlm"), ("house", "dip"), ("peppers", "nlm")]
    assert "during denoise/peppers dip" in str(info.value)
    assert (out / "denoise" / "peppers" / "input_dip.ckpt").exists()
    events.clear()
    run(data_dir, out, events, budget_minutes=60, clock=_Ticks(), **settings)
    assert kinds(events, "done") == [("peppers", "dip")]
    assert [(e.image, e.method) for e in events if e.kind == "plan"] == [("peppers", "dip")]
    whole = tmp_path / "whole"
    run(data_dir, whole, [], **settings)
    for image in ("house", "peppers"):
        for method in ("nlm", "dip"):
            budgeted = read_image(out / "denoise" / image / f"input_{method}.png").pixels
            single = read_image(whole / "denoise" / image / f"input_{method}.png").pixels
            assert np.array_equal(budgeted, single), (image, method)


def test_cli_budget_minutes_exits_3_with_one_line(run_cli, tmp_path: Path, data_dir: Path,
                                                  monkeypatch):
    import deeprestore.apps.reproduce as reproduce

    # the command's options, on a clock that advances one second per reading
    monkeypatch.setattr(reproduce, "ReproduceOptions",
                        functools.partial(ReproduceOptions, clock=_Ticks()))
    result = run_cli("reproduce", "denoise", "--data", data_dir, "--quick", "--images",
                     "house", "--methods", "dip", "--iters", "50", "--budget-minutes", "0.1",
                     "-o", tmp_path / "out")
    assert result.code == 3
    assert "plan: denoise/house dip" in result.err
    assert "deeprestore: the budget is spent" in result.err and "Traceback" not in result.err


def test_grouped_pairs_give_the_one_by_one_results(tmp_path: Path, data_dir: Path):
    """Issue 21: the network pairs of a table (two images × three methods, one size) stepped
    as one group of six give what the pairs give one by one (up to rounding: 2 iterations)."""
    methods = ["nlm", "dip", "dip-tv", "deepred"]
    one_by_one, grouped = tmp_path / "single", tmp_path / "grouped"
    run(data_dir, one_by_one, [], methods=methods)
    events: list[ReproduceEvent] = []
    run(data_dir, grouped, events, methods=methods, group=8)
    assert sorted(kinds(events, "done")) == sorted(
        (image, method) for image in ("house", "peppers") for method in methods)
    assert [e.message for e in events if e.kind == "start" and e.method == "dip"] == [
        "grouped: 6 problems per step"] * 2
    for image in ("house", "peppers"):
        for method in methods:
            alone = json.loads((one_by_one / "denoise" / image / f"input_{method}.json")
                               .read_text())
            together = json.loads((grouped / "denoise" / image / f"input_{method}.json")
                                  .read_text())
            # CUDA: 0.011 dB apart once on an H200 (cuDNN's algorithms differ between runs)
            close = 0.01 if ON_CPU else 0.05
            assert together["psnr"] == pytest.approx(alone["psnr"], abs=close), (image, method)
            assert together["grouped_with"] == (6 if method != "nlm" else None)
            assert together["parameters"] == alone["parameters"]
            # the tables never take the restore commands' everyday defaults
            assert (together["parameters"]["precision"], together["parameters"]["stop"]) == (
                "float32", "fixed")


def test_a_budget_stops_a_group_and_the_rerun_finishes_it(tmp_path: Path, data_dir: Path,
                                                          monkeypatch):
    from deeprestore.apps.reproduce import BudgetSpent

    settings = dict(methods=["dip", "deepred"], images=["house", "peppers"], iterations=12,
                    group=4)
    events: list[ReproduceEvent] = []
    out = tmp_path / "out"
    with pytest.raises(BudgetSpent, match="rerun the same command"):
        run(data_dir, out, events, budget_minutes=20 / 60, clock=_Ticks(), **settings)
    assert not kinds(events, "done")
    checkpoints = sorted(p.name for p in out.glob("denoise/*/input_*.ckpt"))
    assert checkpoints == sorted(["input_deepred.ckpt", "input_dip.ckpt"] * 2)  # all saved
    events.clear()
    run(data_dir, out, events, budget_minutes=60, clock=_Ticks(), **settings)
    assert len(kinds(events, "done")) == 4
    assert not list(out.glob("denoise/*/input_*.ckpt"))
    whole = tmp_path / "whole"
    run(data_dir, whole, [], **settings)
    for image in ("house", "peppers"):
        for method in ("dip", "deepred"):
            resumed = json.loads((out / "denoise" / image / f"input_{method}.json").read_text())
            straight = json.loads((whole / "denoise" / image / f"input_{method}.json")
                                  .read_text())
            assert resumed["resumed_from"] is not None and resumed["iterations"] == 12
            assert resumed["psnr"] == pytest.approx(straight["psnr"], abs=0.05), (image, method)
