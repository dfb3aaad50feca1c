"""The step as one graph (issue 42): a run's iteration — forward, loss, gradient, the rules,
Adam, x, u, λ/µ growth, EMA — traces whole with ``torch.compile(fullgraph=True)`` (a graph break
raises), gives the eager step's result, and works on tensors that keep their storage, as a
CUDA graph replay needs (:mod:`deeprestore.solvers.captured`; no GPU here: the capture itself is
measured by ``bench/gpu_check.sh``).

``backend="eager"``: dynamo traces and checks the whole step, then runs the traced graph with
torch's own kernels, so the comparison with the eager step tests the tracing, not a code
generator (inductor needs a C++ toolchain and minutes here).
"""

from __future__ import annotations

import pytest
import torch
from tiny_problems import tiny_denoising_problem

from deeprestore.config.settings import Settings
from deeprestore.execution import Execution
from deeprestore.solvers.base import problem_to_device
from deeprestore.solvers.factory import make_algorithm

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.cpu_only(reason="torch.compile's CPU path; the GPU check captures")]

EAGER = Execution()
COMPILED = Execution(step_graph="compile", compile_backend="eager")


def _settings(method: str) -> Settings:
    extra: dict = {"dip": {"backtrack_drop": 5.0, "runs": 1},
                   "dip-tv": {"tv_weight": 0.5},
                   "deepred": {"lam": 0.5, "mu": 0.4, "grow_step": 0.03, "grow_threshold": 1.0,
                               "denoiser": "nlm-torch", "denoise_every": 2}}[method]
    return Settings(method=method, iterations=8, log_every=100, net_channels=16,
                    skip_channels=4, seed=1, **extra).validate()


def _algorithm(method: str, execution: Execution = EAGER):
    problem = problem_to_device(tiny_denoising_problem(32), torch.device("cpu"))
    return make_algorithm(problem, _settings(method), torch.device("cpu"), execution=execution)


@pytest.mark.parametrize("method", ["dip", "dip-tv", "deepred"])
def test_the_step_compiles_whole_and_gives_the_eager_result(method):
    torch._dynamo.reset()
    eager, compiled = _algorithm(method), _algorithm(method, COMPILED)
    try:
        for _ in range(4):
            eager_loss, eager_gap = eager.update()
            loss, gap = compiled.update()
            torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-7)
            if eager_gap is not None:
                torch.testing.assert_close(gap, eager_gap, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(compiled.estimate(), eager.estimate(), rtol=1e-5, atol=1e-6)
        for mine, theirs in zip(compiled.runs, eager.runs, strict=True):
            torch.testing.assert_close(mine.x, theirs.x, rtol=1e-5, atol=1e-6)
            if method == "deepred":
                torch.testing.assert_close(mine.mu, theirs.mu)
        assert compiled._stepper.compiled is not None  # the compiled path ran, not the eager one
    finally:
        eager.close()
        compiled.close()


def test_a_graph_break_in_the_step_is_an_error():
    """fullgraph=True is what the test above relies on: a rule deciding on the host, as the
    backtracking and growth rules did before issue 42, fails it."""
    torch._dynamo.reset()
    algorithm = _algorithm("dip-tv", COMPILED)
    real = algorithm._finish_step

    def with_a_read(run, step, refresh):
        if step.loss > 0:  # a decision on the host: data-dependent control flow
            step.loss = step.loss * 1.0
        return real(run, step, refresh)

    algorithm._finish_step = with_a_read  # type: ignore[method-assign]
    try:
        with pytest.raises(Exception, match="(?i)data-dependent|graph break|unsupported"):
            algorithm.update()
    finally:
        algorithm.close()


def _pointers(algorithm) -> list[int]:
    pointers = []
    for run in algorithm.runs:
        pointers += [run.x.data_ptr(), run.u.data_ptr(), run.denoised.data_ptr()]
        pointers += [t.data_ptr() for t in (run.ema, run.out) if t is not None]
        pointers += [p.data_ptr() for p in run.params]
        for state in run.optimizer.state.values():
            pointers += [v.data_ptr() for v in state.values() if isinstance(v, torch.Tensor)]
        if isinstance(run.mu, torch.Tensor):
            pointers += [run.lam.data_ptr(), run.mu.data_ptr(), run.threshold.data_ptr()]
    return pointers


@pytest.mark.parametrize("method", ["dip", "dip-tv", "deepred"])
def test_the_state_keeps_its_storage_across_iterations_and_a_rollback(method):
    algorithm = _algorithm(method)
    try:
        algorithm.update()
        saved = algorithm.state_dict()
        before = _pointers(algorithm)
        for _ in range(3):
            algorithm.update()
            assert _pointers(algorithm) == before
        algorithm.load_state_dict(saved)  # a NaN rollback or a resume
        assert _pointers(algorithm) == before
        algorithm.update()
        assert _pointers(algorithm) == before
    finally:
        algorithm.close()
