"""``runs = N`` on a CPU: the runs' network steps go side by side on worker threads.

Every test pins torch to two threads (the machine may have one core: the threads still exist).
With two threads and two runs each run steps on one torch thread, so the job must equal, bit for
bit, the same job run one run after the other on one torch thread: each run owns its weights,
input and perturbation generator. (Against two threads one after the other it differs: a thread
count changes the rounding, and Adam's first steps amplify that.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch
from tiny_problems import tiny_denoising_problem, torch_threads

from deeprestore.config.settings import Settings
from deeprestore.solvers.base import Problem, Result
from deeprestore.solvers.control import RunControl
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.runner import restore

# runs = N steps side by side on CPU worker threads only; the comparisons are bit for bit
pytestmark = pytest.mark.cpu_only(reason="side-by-side run workers exist on a CPU only")


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


def _settings(**changes: object) -> Settings:
    base: dict[str, object] = dict(method="dip", iterations=6, log_every=3, runs=2, seed=2,
                                   net_channels=8, skip_channels=2, output="network",
                                   sigma_f=10.0)
    base.update(changes)
    return Settings(**base).validate()  # type: ignore[arg-type]


def _one_after_the_other_on_one_thread(problem: Problem, settings: Settings) -> Result:
    with torch_threads(1):  # one thread: no workers, the runs in lock-step
        return restore(problem, settings)


@pytest.mark.parametrize(("method", "runs"), [("dip", 2), ("dip", 3), ("deepred", 2)])
def test_side_by_side_computes_the_same_runs_as_one_after_the_other(method, runs):
    problem = tiny_denoising_problem()
    settings = _settings(method=method, runs=runs)
    side = restore(problem, settings)
    lock = _one_after_the_other_on_one_thread(problem, settings)
    # a run stepped twice, skipped, or its output given to another run would differ
    assert torch.equal(side.image, lock.image)
    assert [r.loss for r in side.log] == [r.loss for r in lock.log]
    assert [r.psnr for r in side.log] == [r.psnr for r in lock.log]


def test_each_worker_steps_its_runs_on_its_share_of_the_threads(monkeypatch):
    seen: dict[int, set[tuple[str, int]]] = {}
    real = NetworkAlgorithm._theta_step

    def spy(self, run):
        index = self.runs.index(run)
        seen.setdefault(index, set()).add((threading.current_thread().name,
                                           torch.get_num_threads()))
        return real(self, run)

    monkeypatch.setattr(NetworkAlgorithm, "_theta_step", spy)
    restore(tiny_denoising_problem(), _settings(runs=3))
    assert sorted(seen) == [0, 1, 2]
    workers = {index: threads.pop() for index, threads in seen.items() if len(threads) == 1}
    assert len(workers) == 3  # a run always steps on the same thread
    # runs 0 and 2 on one worker, run 1 on the other
    assert workers[0][0] == workers[2][0] != workers[1][0]
    assert all(name != threading.main_thread().name and count == 1
               for name, count in workers.values())
    assert torch.get_num_threads() == 2  # the main thread keeps its count


@pytest.mark.parametrize("changes", [
    {"runs": 1},
    {"method": "deepred", "denoiser_mode": "async"},
])
def test_no_workers_for_one_run_or_beside_an_async_denoiser(changes):
    settings = _settings(**changes)
    algorithm = NetworkAlgorithm(tiny_denoising_problem(), settings, torch.device("cpu"), None)
    try:
        assert algorithm._workers is None
    finally:
        algorithm.close()


def test_no_workers_on_one_thread():
    with torch_threads(1):
        algorithm = NetworkAlgorithm(tiny_denoising_problem(), _settings(), torch.device("cpu"),
                                     None)
    assert algorithm._workers is None


def test_a_failing_run_raises_only_once_every_worker_is_idle(monkeypatch):
    real = NetworkAlgorithm._theta_step
    finished: list[int] = []

    def step(self, run):
        index = self.runs.index(run)
        if index == 0:
            raise RuntimeError("run 0 broke")
        time.sleep(0.2)  # run 1 is still busy when run 0 fails
        result = real(self, run)
        finished.append(index)
        return result

    monkeypatch.setattr(NetworkAlgorithm, "_theta_step", step)
    algorithm = NetworkAlgorithm(tiny_denoising_problem(), _settings(), torch.device("cpu"), None)
    try:
        with pytest.raises(RuntimeError, match="run 0 broke"):
            algorithm.update()
        assert finished == [1]  # the caller may roll back or save: nobody touches a run now
    finally:
        algorithm.close()
    assert not any(t.name.startswith("run") for t in threading.enumerate())  # workers shut down


def test_resuming_side_by_side_runs_gives_the_same_result_bit_for_bit():
    problem = tiny_denoising_problem()
    settings = _settings(method="deepred", iterations=8, log_every=2)
    full = restore(problem, settings)
    saved: list[dict] = []
    restore(problem, settings, control=RunControl(checkpoint=saved.append, checkpoint_every=4))
    resumed = restore(problem, settings, control=RunControl(resume=saved[0]))
    assert torch.equal(resumed.image, full.image)
    assert [r.loss for r in resumed.log] == [r.loss for r in full.log]
