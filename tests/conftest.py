"""Shared fixtures: small test images on disk, an in-process CLI runner, one torch thread."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs in one worker per core (pyproject's addopts): one torch thread each, so
    # no OpenMP thread waits on a sibling descheduled by another worker. Set before torch
    # loads; tests that need more threads set them themselves (tiny_problems.torch_threads).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tiny_problems import torch_threads

from deeprestore.apps.demo import demo_images
from deeprestore.cli.main import main
from deeprestore.io.images import Image
from deeprestore.io.writers import write_image


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--threads auto`` sees an idle machine in every test (the note it prints on a busy one,
    and the thread count it sets, would depend on what else runs); tests/test_threads.py
    replaces this where it tests the busy case."""
    monkeypatch.setattr("deeprestore.threads.busy_cores", lambda *args, **kwargs: 0.0)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``deeprestore ARGS`` in-process; return exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a whole test module, put back afterwards.

    For modules of tiny tensors (on a busy 2-core machine OpenMP threads waiting for a
    descheduled sibling make them 5–10× slower; their results do not depend on it) and for
    modules whose algorithms must all round alike, without side-by-side run workers. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def demo_pair() -> tuple[np.ndarray, np.ndarray]:
    """The demo's clean 64×64 RGB crop and its σ = 25 noisy version (float64, [0, 1])."""
    return demo_images()


@pytest.fixture
def tiny_images(tmp_path: Path, demo_pair: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    """16×16 crops on disk: noisy/clean RGB PNGs, a grey PNG and an RGB JPEG."""
    clean, noisy = demo_pair
    paths = {
        "clean": tmp_path / "clean.png",
        "noisy": tmp_path / "noisy.png",
        "grey": tmp_path / "grey.png",
        "jpeg": tmp_path / "noisy.jpg",
    }
    write_image(paths["clean"], Image(clean[:16, :16]))
    write_image(paths["noisy"], Image(noisy[:16, :16]))
    write_image(paths["grey"], Image(noisy[:16, :16].mean(axis=2, keepdims=True)))
    write_image(paths["jpeg"], Image(noisy[:16, :16]))
    return paths
