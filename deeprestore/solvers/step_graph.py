"""How one run's iteration executes (``Execution.step_graph``): eager, traced whole by
``torch.compile(fullgraph=True)``, or replayed from a captured CUDA graph.

The iteration is :meth:`~deeprestore.solvers.network.NetworkAlgorithm.step_run` — the Θ-step,
the x-updates, u, the growth rule and the EMA, on tensors only, updated in place; the denoiser
call and logging stay outside. ``compile`` takes the gradient through ``torch.func``
(:func:`functional_pass`: ``torch.autograd.grad`` would break the graph); ``cuda-graph`` captures
the eager step after a warm-up (:class:`~deeprestore.solvers.captured.CapturedStep`), with z's
perturbation drawn into the run's buffer before each replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad_and_value

from deeprestore.execution import network_arithmetic
from deeprestore.solvers.captured import CapturedStep
from deeprestore.solvers.network_run import NetworkRun, ThetaStep

StepResult = tuple[ThetaStep, torch.Tensor | None]


def functional_pass(algorithm: Any, run: NetworkRun, z: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The forward pass, loss and gradient of ``run`` (of ``algorithm``, a network algorithm)
    at the network input ``z`` (N, C, H, W) as ``torch.func`` transforms of Θ: (T_Θ(z)
    detached, the loss, the MSE of H T − y, ∂loss/∂Θ) — the eager pass's arithmetic, in a form
    ``torch.compile(fullgraph=True)`` traces whole."""
    names = [name for name, _ in run.net.named_parameters()]
    buffers = dict(run.net.named_buffers())

    def loss_of(params: list[torch.Tensor], state: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        def forward(inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(run.net, (dict(zip(names, params, strict=True)), state),
                                   (inputs,))

        out = algorithm.forward_in_precision(forward, z)
        losses, data_mse = algorithm.losses(out, run.x, run.u, run.mu)
        return losses[0], (out.detach(), data_mse[0])

    with network_arithmetic(algorithm.device, algorithm.settings.precision):
        grads, (loss, (out, data_mse)) = grad_and_value(loss_of, has_aux=True)(
            [param.detach() for param in run.params], buffers)
    return out, loss.detach(), data_mse, list(grads)


class RunStepper:
    """Runs ``algorithm.step_run(run, noise, refresh)`` as ``algorithm.execution.step_graph``
    says (module docstring)."""

    def __init__(self, algorithm: Any) -> None:
        self.algorithm = algorithm
        self.mode: str = algorithm.execution.step_graph
        self.compiled: Callable[..., StepResult] | None = None
        self.graphs: dict[int, CapturedStep[StepResult]] = {}

    def __call__(self, run: NetworkRun, refresh: bool) -> StepResult:
        algorithm = self.algorithm
        if self.mode == "compile":
            if self.compiled is None:
                self.compiled = torch.compile(algorithm.step_run, fullgraph=True,
                                              backend=algorithm.execution.compile_backend)
            return self.compiled(run, run.perturbation.next(), refresh)
        if (self.mode == "cuda-graph" and algorithm.device.type == "cuda"
                and algorithm.settings.inner_steps == 1):  # J > 1 calls f inside the step
            return self._replay(run)
        return algorithm.step_run(run, None, refresh)

    def _replay(self, run: NetworkRun) -> StepResult:
        """The run's captured step, its perturbation drawn into the buffer the graph reads."""
        noise = run.perturbation.next()
        graph = self.graphs.get(id(run))
        if graph is None:
            algorithm = self.algorithm
            graph = CapturedStep(lambda: algorithm.step_run(run, noise, refresh=False),
                                 algorithm.device)
            self.graphs[id(run)] = graph
        return graph()
