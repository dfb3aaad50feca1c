"""One run of a network method: its z, Θ, Adam, x, u and EMA, the reference rules' state (λ,
µ, the growth threshold, DIP's last good Θ), and its checkpoint (``state_dict``).

:class:`~deeprestore.solvers.network.NetworkAlgorithm` steps ``runs`` of them in lock-step;
a :class:`ThetaStep` is what one Θ-step of a run gives back. Tensors are (N, C, H, W) floats
on the solver's device.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import DEFAULT_EXECUTION, Execution, prepare_network_step
from deeprestore.models.skip import SkipNet, make_input
from deeprestore.solvers.base import Problem
from deeprestore.solvers.perturbation import PerturbationStream


class NetworkRun:
    """State of one independent run of a network method (its own z, Θ, Adam, x, u, EMA)."""

    def __init__(
        self,
        problem: Problem,
        settings: Settings,
        seed: int,
        device: torch.device,
        execution: Execution = DEFAULT_EXECUTION,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        height, width = problem.size
        self.z = make_input(
            settings.input_channels,
            height,
            width,
            scale=settings.input_scale,
            kind=settings.input_kind,
            generator=generator,
            device=device,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = SkipNet(
                settings.input_channels,
                problem.channels,
                channels=settings.net_channels,
                skip_channels=settings.skip_channels,
                upsample_mode=settings.upsample,
            ).to(device)
        self.net, self.z, self.optimizer = prepare_network_step(
            self.net, self.z, settings.lr, device, execution, settings.precision)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.net
        if settings.compile:
            self.forward = torch.compile(self.net)  # type: ignore[assignment]
        #: z's per-step perturbation: the CPU generator continued after z, on every device
        self.perturbation = PerturbationStream(generator, self.z.shape, self.z.dtype, device)
        start = problem.x_init if settings.x_start == "problem" else torch.zeros_like(
            problem.x_init)
        self.x = start.clone()
        self.u = torch.zeros_like(self.x)
        self.denoised = self.x.clone()
        #: the x whose f the lagged schedule (``denoiser_lag``) applies next
        self.pending = self.x.clone() if settings.denoiser_lag else None
        self.ema: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.lam, self.mu = settings.lam, settings.mu  # grow under ``grow_step``
        self.threshold = settings.grow_threshold
        self.good_params: list[torch.Tensor] | None = None  # ``backtrack_drop``'s last good Θ
        self.good_psnr = -math.inf
        self.backtracks: list[dict[str, Any]] = []

    _TENSORS = ("x", "u", "denoised", "ema", "out", "pending")
    _NUMBERS = ("lam", "mu", "threshold", "good_psnr")

    def state_dict(self) -> dict[str, Any]:
        """Copies of Θ, Adam's state, the perturbation generator, x, u, f(x), EMA, last T, and
        the reference rules' state (λ, µ, threshold, last good Θ)."""
        state: dict[str, Any] = {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "noise_generator": self.perturbation.get_state(),
            "good_params": (None if self.good_params is None
                            else [p.clone() for p in self.good_params]),
            "backtracks": [dict(event) for event in self.backtracks],
        }
        for name in self._TENSORS:
            value = getattr(self, name)
            state[name] = None if value is None else value.detach().clone()
        for name in self._NUMBERS:
            state[name] = getattr(self, name)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        _match_parameter_layouts(self.optimizer)
        self.perturbation.set_state(state["noise_generator"])
        device = self.x.device
        for name in self._TENSORS:
            value = state.get(name)
            setattr(self, name, None if value is None else value.to(device).clone())
        for name in self._NUMBERS:
            if name in state:
                setattr(self, name, state[name])
        good = state.get("good_params")
        self.good_params = None if good is None else [
            torch.empty_like(p).copy_(g) for p, g in zip(self.net.parameters(), good, strict=True)]
        self.backtracks = [dict(event) for event in state.get("backtracks", [])]

    def backtrack(self, data_psnr: float, drop: float, iteration: int,
                  params: list[torch.Tensor] | None = None) -> bool:
        """DIP's backtracking: False (and Θ restored to the last good iteration's) when
        ``data_psnr`` (dB) is more than ``drop`` below the last good one; else True, and the
        current Θ (the one that produced this PSNR) becomes the last good one. ``params``: where
        Θ lives when not in the run's own net (its views in a grouped network)."""
        params = list(self.net.parameters()) if params is None else params
        with torch.no_grad():
            if self.good_params is not None and data_psnr < self.good_psnr - drop:
                for param, good in zip(params, self.good_params, strict=True):
                    param.copy_(good)
                self.backtracks.append({"at": iteration, "psnr": data_psnr,
                                        "back_to_psnr": self.good_psnr})
                return False
            if self.good_params is None:
                self.good_params = [torch.empty_like(param) for param in params]
            for good, param in zip(self.good_params, params, strict=True):
                good.copy_(param)
        self.good_psnr = data_psnr
        return True

    def grow(self, data_psnr: float, settings: Settings) -> None:
        """The growth rule of the authors' denoising code: past the threshold, λ and µ grow by
        ``grow_step`` and the threshold by ``grow_threshold_step`` (dB). A run that starts at
        λ = 0 has no denoiser and keeps λ = 0 (else λ would grow while f(x) stays its
        initial value, the input, and pull x back toward it)."""
        if data_psnr > self.threshold:
            if settings.lam > 0:
                self.lam += settings.grow_step
            self.mu += settings.grow_step
            self.threshold += settings.grow_threshold_step


@dataclass
class ThetaStep:
    """One run's Θ-step: T_Θ(z) of its forward pass (detached), its loss, the MSE of
    H T_Θ(z) − y, PSNR(H T_Θ(z), y) in dB where a rule needs it (a host sync), and whether the
    step was kept (False: backtracked, Θ restored, no Adam step)."""

    out: torch.Tensor
    loss: torch.Tensor
    data_mse: torch.Tensor
    data_psnr: float | None = None
    kept: bool = True


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Loaded state keeps the strides it was saved with: a checkpoint made with the other CPU
    layout (channels-last or NCHW: :func:`~deeprestore.execution.channels_last`) holds its
    moments in that layout, and torch's fused CPU Adam steps a parameter wrongly from moments
    of another layout (tests/test_engine.py).
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (isinstance(value, torch.Tensor) and value.shape == param.shape
                    and value.stride() != param.stride()):
                state[key] = torch.empty_like(param).copy_(value)
