"""bench/gpu_check.sh --dry-run: every step of the GPU check runs on the CPU at tiny sizes and
writes every result file and every row of its step table (the GPU machine is lent for one call
of a few minutes, so the script has to work the first time)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
STEPS = ("wheels", "env", "suite", "methods", "grouped", "profile", "denoisers", "reproduce",
         "reproduce-files")
BM3D = importlib.util.find_spec("bm3d") is not None
FILES = ("steps.md", "info.txt", "suite.txt", "measure.json", "profile.txt", "denoisers.json",
         "reproduce.tar.gz", "log.txt")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get("DEEPRESTORE_GPU_CHECK")),
                       reason="inside bench/gpu_check.sh's own suite step"),
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                       reason="needs bash and coreutils' timeout"),
]


def steps_table(text: str) -> dict[str, list[str]]:
    rows = [line.strip().strip("|").split("|") for line in text.splitlines()[2:] if line]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_dry_run_runs_every_step_and_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
           # a busy CI machine: the dry run's own total (it normally takes 1–2 minutes) must
           # not leave reproduce without time
           "TOTAL_S": "600"}
    env.pop("DEEPRESTORE_TEST_DEVICE", None)
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log

    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # ≤ 8 files come back
    table = steps_table((out / "steps.md").read_text())
    assert list(table) == list(STEPS), table
    for name, (result, seconds, limit, _code, _note) in table.items():
        # wheels: nothing to install where bm3d imports (CI); no .whl to install it from else
        allowed = {"ok", "skipped"} if name == "wheels" and not BM3D else {"ok"}
        assert result in allowed, (name, table[name], log)
        assert int(seconds) <= int(limit)

    info = (out / "info.txt").read_text()
    assert "torch" in info and "bm3d" in info
    assert "1 passed" in (out / "suite.txt").read_text()

    profile = (out / "profile.txt").read_text()
    assert "step graph eager" in profile and "step graph cuda-graph" in profile
    assert "| op | calls / step |" in profile

    measure = json.loads((out / "measure.json").read_text())
    assert measure["info"]["set"] == ["net_channels=8"]
    methods = measure["methods"]["rows"]
    assert [(r["precision"], r["method"], r["step_graph"]) for r in methods] == [
        (precision, method, graph) for precision in ("float32", "bf16")
        for method in ("dip", "deepred") for graph in ("eager", "cuda-graph")]
    for row in methods:
        assert "error" not in row, row
        assert row["s_per_it"] > 0 and row["net_channels"] == 8
    # a CUDA graph needs CUDA: on the CPU those rows run the eager step, same seed, same result
    for eager, graph in zip(methods[0::2], methods[1::2], strict=True):
        assert graph["psnr"] == eager["psnr"]
    # the preset's own settings, without [everyday]: DIP's two runs, DeepRED's growth rule
    assert measure["methods"]["settings"]["dip"]["runs"] == 2
    assert measure["methods"]["settings"]["deepred"]["grow_step"] > 0
    assert all("d_psnr_vs_float32" in row for row in methods[1:2] + methods[3:])
    grouped = measure["grouped"]["rows"]
    assert [(r["precision"], r["problems"]) for r in grouped] == [
        ("float32", 1), ("float32", 2), ("bf16", 1), ("bf16", 2)]
    for row in grouped:
        assert "error" not in row, row
        assert row["grouped_s_per_round"] > 0 and row["separate_s_per_round"] > 0
    assert grouped[0]["max_abs_diff_separate_grouped"] < 1e-3  # float32: one result either way
    assert "d_psnr_vs_float32" in grouped[2]

    denoisers = json.loads((out / "denoisers.json").read_text())["rows"]
    assert [r["denoiser"] for r in denoisers] == ["nlm-torch", "bm3d-torch", "nlm"]
    assert all("error" not in r and r["psnr"] > r["psnr_noisy"] for r in denoisers)

    with tarfile.open(out / "reproduce.tar.gz") as tar:
        names = tar.getnames()
    assert "reproduce/reproduce.txt" in names
    assert "reproduce/denoise/results.md" in names
    assert not [n for n in names if n.endswith(".png")]
