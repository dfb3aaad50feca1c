"""Nothing host-bound inside a step (issue 42): between two logged rows an iteration reads
nothing back from the device, and it dispatches few enough ops to be launch-cheap on a GPU.

Counted with :mod:`op_counting` (a ``TorchDispatchMode`` plus a ``TorchFunctionMode``) through
``deeprestore.restore`` (every method × task) and a grouped round of ``restore_together``, per
iteration, on the CPU at 32 px in float32, one torch thread (the runs step one after the other,
all on this thread, where the modes see them). A package denoiser's own transfer to the host is
excepted (scikit-image's NLM, ``bm3d``); the torch denoisers are not.

Before issue 42, per iteration: DIP (2 runs) 2 reads and 1 202 ops, DIP-TV 0 and 542, DeepRED 1
and 521; a grouped round of 4 problems 5 reads, a blocking copy and ≈ 2 770 ops.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from op_counting import Counter, per_iteration
from tiny_problems import tiny_denoising_problem

import deeprestore
from deeprestore.config.settings import Settings
from deeprestore.solvers.runner import restore_together

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.cpu_only(reason="counts the ops of the CPU's one thread")]

SIZE = 32


def _inputs(task: str) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    image = rng.random((SIZE, SIZE, 3)).astype(np.float32)
    extra: dict = {"sigma": 25}
    if task == "deblur":
        extra["kernel"] = "uniform9"
    elif task == "superres":
        image, extra["factor"] = image[:SIZE // 4, :SIZE // 4], 4
    elif task == "inpaint":
        extra["mask"] = rng.random((SIZE, SIZE)) > 0.5
    return image, extra


def _restore(task: str, method: str, **settings):
    image, extra = _inputs(task)

    def run(iterations: int) -> None:
        deeprestore.restore(image, task=task, method=method, iterations=iterations,
                            log_every=10_000, seed=0, precision="float32",
                            **extra, **settings)

    return run


@pytest.mark.parametrize("task", ["denoise", "deblur", "superres", "inpaint"])
@pytest.mark.parametrize("method", ["dip", "dip-tv", "deepred", "red"])
def test_an_iteration_reads_nothing_back(task, method):
    extra = {"denoise_every": 2} if method in ("deepred", "red") else {}
    _, reads, where = per_iteration(_restore(task, method, net_channels=16, **extra), 2, 5)
    assert reads == 0, dict(where)


@pytest.mark.parametrize("denoiser", ["nlm-torch", "bm3d-torch"])
def test_deepred_with_a_torch_denoiser_reads_nothing_back(denoiser):
    run = _restore("denoise", "deepred", net_channels=16, denoiser=denoiser, denoise_every=1,
                   denoiser_lag=False, denoiser_mode="sync")
    _, reads, where = per_iteration(run, 2, 5)
    assert reads == 0, dict(where)


@pytest.mark.parametrize("method", ["dip", "deepred"])
def test_the_automatic_stop_reads_at_logged_rows_only(method):
    """The stop's window, minimum and rule live on the device; a row every 10 000."""
    image, extra = _inputs("denoise")

    def run(iterations: int) -> None:
        deeprestore.restore(image, method=method, stop="auto", iterations=iterations,
                            stop_window=2, stop_patience=1000, log_every=10_000, seed=0,
                            precision="float32", net_channels=16, **extra)

    _, reads, where = per_iteration(run, 4, 8)
    assert reads == 0, dict(where)


@pytest.mark.parametrize(("method", "most"), [("dip", 900), ("dip-tv", 520), ("deepred", 500)])
def test_ops_per_iteration_at_32_px(method, most):
    """The issue's budget, through ``restore`` with the presets' defaults (DIP: its 2 runs)."""
    ops, _, _ = per_iteration(_restore("denoise", method), 2, 5)
    assert ops <= most


def _group(count: int = 4) -> tuple[list, list[Settings]]:
    methods = ["dip", "dip", "deepred", "dip-tv"][:count]
    settings = [Settings(method=m, iterations=6, log_every=10_000, seed=seed,
                         backtrack_drop=5.0 if m == "dip" else 0.0,
                         **({"lam": 0.0, "mu": 0.5} if m == "deepred" else {})).validate()
                for seed, m in enumerate(methods)]
    return [tiny_denoising_problem(SIZE) for _ in methods], settings


def test_a_grouped_round_reads_nothing_back_and_stays_within_its_ops():
    problems, settings = _group()

    def run(iterations: int) -> None:
        results = restore_together(problems, [Settings(**{**vars(s), "iterations": iterations})
                                              for s in settings], device="cpu")
        assert not any(isinstance(r, BaseException) for r in results), results

    ops, reads, where = per_iteration(run, 2, 5)
    assert reads == 0, dict(where)
    assert ops <= 900


def test_the_counter_sees_a_read():
    """The counter counts what it is for (so a zero above is not a blind spot)."""
    x = torch.ones(3)
    with Counter() as counter:
        float(x.sum())
        x.tolist()
        bool((x > 0).any())
        torch.tensor([1.0, 2.0])
        x.nonzero()
    assert counter.reads == 5
