"""Shared fixtures: small test images on disk, an in-process CLI runner, one torch thread, and
the test device.

``DEEPRESTORE_TEST_DEVICE`` (``cpu`` when unset; ``cuda`` or ``cuda:N``) is where the engine,
API, CLI and reproduce tests run: ``--device auto`` means it in every test, and tests that call
the engine or the API pass it (``tiny_problems.DEVICE``). An unknown value, or CUDA where there
is none, ends the session with one line. Tests marked ``cpu_only(reason=...)`` are skipped on
any other device (docs/performance.md, "Tests on a GPU"); tests marked ``needs_bm3d`` are
skipped where the ``bm3d`` package does not import.
"""

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
import torch
from tiny_problems import DEVICE, DEVICE_VARIABLE, parse_test_device, torch_threads

from deeprestore.apps.demo import demo_images
from deeprestore.arrays import Image
from deeprestore.cli.main import main
from deeprestore.io.writers import write_image


def _bm3d_imports() -> bool:
    """Whether the ``bm3d`` package (the reference BM3D) can be imported here."""
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    """Check DEEPRESTORE_TEST_DEVICE before anything runs: one line and exit otherwise."""
    text = os.environ.get(DEVICE_VARIABLE)
    try:
        device = parse_test_device(text)
    except ValueError as err:
        pytest.exit(str(err), returncode=pytest.ExitCode.USAGE_ERROR)
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        pytest.exit(f"{DEVICE_VARIABLE}={text}: no CUDA device here (torch "
                    f"{torch.__version__}, built with {built}); unset it to test on the CPU",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    if device.index is not None and device.index >= torch.cuda.device_count():
        pytest.exit(f"{DEVICE_VARIABLE}={text}: only {torch.cuda.device_count()} CUDA "
                    "device(s) here", returncode=pytest.ExitCode.USAGE_ERROR)
    # float32 convolutions in the tests that build algorithms themselves, as the runner sets
    # for a run (configure_backends); torch's default lets cuDNN use TF32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def pytest_report_header(config: pytest.Config) -> str:
    return f"test device: {DEVICE} ({DEVICE_VARIABLE})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cpu_only`` tests on another device and ``needs_bm3d`` tests without ``bm3d``."""
    bm3d_here: bool | None = None
    for item in items:
        marker = item.get_closest_marker("cpu_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: cpu_only needs a reason=")
            if DEVICE.type != "cpu":
                item.add_marker(pytest.mark.skip(reason=f"CPU only: {reason}"))
        if item.get_closest_marker("needs_bm3d") is not None:
            if bm3d_here is None:
                bm3d_here = _bm3d_imports()
            if not bm3d_here:
                item.add_marker(pytest.mark.skip(reason="needs the bm3d package (not installed)"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The test device (DEEPRESTORE_TEST_DEVICE; the CPU when unset)."""
    return DEVICE


@pytest.fixture(autouse=True)
def auto_is_the_test_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device auto`` (every CLI test that names no device) means the test device."""
    monkeypatch.setattr("deeprestore.execution.auto_device", lambda: DEVICE)


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--threads auto`` sees an idle machine in every test (the note it prints on a busy one,
    and the thread count it sets, would depend on what else runs); tests/test_threads.py
    replaces this where it tests the busy case."""
    monkeypatch.setattr("deeprestore.threads.busy_cores", lambda *args, **kwargs: 0.0)


@pytest.fixture(autouse=True)
def own_decision_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Every test keeps ``--precision auto``'s decisions (deeprestore.solvers.decisions) in a
    folder of its own: none reads the user's, or another test's."""
    monkeypatch.setenv("DEEPRESTORE_CACHE_DIR", str(tmp_path_factory.mktemp("decisions")))


@pytest.fixture(autouse=True)
def auto_precision_keeps_float32(monkeypatch: pytest.MonkeyPatch,
                                 request: pytest.FixtureRequest) -> None:
    """``precision = "auto"`` (the restore commands' default) chooses float32 in every test:
    its choice is a timing, which two runs of one test could read on either side of the
    threshold, and the suite compares runs bit for bit. float32's step is still measured (the
    cost line), bf16's is said to take twice as long. Tests marked ``real_precision_timing``, and
    tests/test_precision.py with its own timings, see the real choice."""
    if request.node.get_closest_marker("real_precision_timing") is not None:
        return
    import deeprestore.solvers.timing as timing

    real = timing.step_seconds

    def float32_faster(problem, settings, device, execution, precisions):
        measured = real(problem, settings, device, execution, precisions[:1])
        seconds, state = measured[precisions[0]]
        return {**measured, **{p: (2 * seconds, state) for p in precisions[1:]}}

    monkeypatch.setattr(timing, "step_seconds", float32_faster)


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
