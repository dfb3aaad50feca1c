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
from functools import partial
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import DEFAULT_EXECUTION, Execution, prepare_network_step
from deeprestore.models.skip import SkipNet, make_input
from deeprestore.solvers.adam import adam_step, init_adam_state
from deeprestore.solvers.base import Problem
from deeprestore.solvers.perturbation import PerturbationStream


class NetworkRun:
    """State of one independent run of a network method (its own z, Θ, Adam, x, u, EMA).

    Everything an iteration changes lives in tensors on the run's device, updated in place:
    the parameters, Adam's moments and step counts, x, u, f(x), the EMA and the last output
    keep their storage from one iteration to the next (a captured CUDA graph replays on them),
    and the reference rules' numbers (λ, µ and the growth threshold under ``grow_step``, the
    last good PSNR under ``backtrack_drop``) are float64 tensors, so no rule reads a number
    back to the host inside a step (issue 42).
    """

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
        self.params = list(self.net.parameters())
        if execution.step_graph == "cuda-graph" and device.type == "cuda":
            for group in self.optimizer.param_groups:  # a graph reads the rate, decayed in place
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
        init_adam_state(self.optimizer)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.net
        if settings.compile:
            self.forward = torch.compile(self.net)  # type: ignore[assignment]
        #: z's per-step perturbation: the CPU generator continued after z on a CPU, a device
        #: generator elsewhere (:mod:`deeprestore.solvers.perturbation`)
        self.perturbation = PerturbationStream(generator, self.z.shape, self.z.dtype, device,
                                               seed=seed)
        start = problem.x_init if settings.x_start == "problem" else torch.zeros_like(
            problem.x_init)
        self.x = start.clone()
        self.u = torch.zeros_like(self.x)
        self.denoised = self.x.clone()
        #: the x whose f the lagged schedule (``denoiser_lag``) applies next
        self.pending = self.x.clone() if settings.denoiser_lag else None
        self.ema: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        number = partial(torch.tensor, dtype=torch.float64, device=device)
        growing = settings.grow_step > 0
        #: λ, µ: numbers, or float64 tensors when they grow (``grow_step``)
        self.lam: float | torch.Tensor = number(settings.lam) if growing else settings.lam
        self.mu: float | torch.Tensor = number(settings.mu) if growing else settings.mu
        self.threshold = number(settings.grow_threshold)
        #: ``backtrack_drop``'s last good Θ and its PSNR (−inf: none yet)
        self.good_params = ([p.detach().clone() for p in self.params]
                            if settings.backtrack_drop > 0 else None)
        self.good_psnr = number(-math.inf)
        self.backtracks: list[dict[str, Any]] = []
        #: this iteration's backtracking outcome per iteration since the last read:
        #: (iteration, backtracked, PSNR, last good PSNR), read back by :meth:`events`
        self._pending_events: list[tuple[int, torch.Tensor]] = []

    _TENSORS = ("x", "u", "denoised", "ema", "out", "pending")
    _NUMBERS = ("lam", "mu", "threshold", "good_psnr")

    def state_dict(self) -> dict[str, Any]:
        """Copies of Θ, Adam's state, the perturbation generator, x, u, f(x), EMA, last T, and
        the reference rules' state (λ, µ, threshold, last good Θ)."""
        state: dict[str, Any] = {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "noise_generator": self.perturbation.get_state(),
            "good_params": (None if self.good_params is None or math.isinf(float(
                self.good_psnr)) else [p.clone() for p in self.good_params]),
            "backtracks": [dict(event) for event in self.events()],
        }
        for name in self._TENSORS:
            value = getattr(self, name)
            state[name] = None if value is None else value.detach().clone()
        for name in self._NUMBERS:
            state[name] = float(getattr(self, name))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perturbation.set_state(state["noise_generator"])  # first: it refuses another device
        self.net.load_state_dict(state["net"])
        self._load_optimizer(state["optimizer"])
        device = self.x.device
        for name in self._TENSORS:
            value = state.get(name)
            current = getattr(self, name)
            if value is None:
                setattr(self, name, None)
            elif current is not None and current.shape == value.shape:
                current.copy_(value)  # in place: the storage stays
            else:
                setattr(self, name, value.to(device).clone())
        for name in self._NUMBERS:
            if name in state:
                current = getattr(self, name)
                if isinstance(current, torch.Tensor):
                    current.fill_(float(state[name]))
                else:
                    setattr(self, name, float(state[name]))
        good = state.get("good_params")
        if self.good_params is not None:
            for mine, saved in zip(self.good_params, good or self.params, strict=True):
                mine.copy_(saved)
        self._pending_events = []
        self.backtracks = [dict(event) for event in state.get("backtracks", [])]

    def _load_optimizer(self, saved: dict[str, Any]) -> None:
        """Adam's saved state, copied into the tensors the run steps with (a rate held as a
        tensor stays that tensor): their storage, and a captured graph's view of it, stay."""
        own = {param: dict(state) for param, state in self.optimizer.state.items()}
        rates = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(copy.deepcopy(saved))
        _match_parameter_layouts(self.optimizer)
        init_adam_state(self.optimizer)
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                kept = own.get(param, {}).get(key)
                if (isinstance(value, torch.Tensor) and isinstance(kept, torch.Tensor)
                        and kept.shape == value.shape):
                    state[key] = kept.copy_(value)
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            if isinstance(rate, torch.Tensor):
                group["lr"] = rate.fill_(float(group["lr"]))

    def backtrack(self, data_psnr: torch.Tensor, drop: float,
                  params: list[torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """DIP's backtracking, on the device: returns ``kept`` (a bool tensor) and the outcome
        to record (:meth:`note`). ``kept`` is False (and Θ restored to the last good
        iteration's) when ``data_psnr`` (dB, a float64 tensor) is more than ``drop`` below the
        last good one; else True, and the current Θ (the one that produced this PSNR) becomes
        the last good one. ``params``: where Θ lives when not in the run's own net (its views in
        a grouped network). Selects by ``lerp`` with a 0/1 weight, which gives either end
        exactly."""
        assert self.good_params is not None
        params = self.params if params is None else params
        back = data_psnr < self.good_psnr - drop
        kept = ~back
        with torch.no_grad():
            count = len(params)
            torch._foreach_lerp_(self.good_params, params, [kept.to(params[0].dtype)] * count)
            torch._foreach_lerp_(params, self.good_params, [back.to(params[0].dtype)] * count)
        outcome = torch.stack([back.double(), data_psnr.double(), self.good_psnr])
        self.good_psnr.copy_(torch.where(back, self.good_psnr, data_psnr))
        return kept, outcome

    def note(self, iteration: int, outcome: torch.Tensor) -> None:
        """Keep iteration ``iteration``'s backtracking ``outcome`` (a copy) until :meth:`events`
        reads the outcomes back."""
        self._pending_events.append((iteration, outcome.clone()))

    def events(self) -> list[dict[str, Any]]:
        """The backtracks so far: reads the outcomes of the iterations since the last call back
        from the device (one transfer; call it at log rows)."""
        if self._pending_events:
            rows = torch.stack([row for _, row in self._pending_events]).tolist()
            for (at, _), (back, psnr, before) in zip(self._pending_events, rows, strict=True):
                if back:
                    self.backtracks.append({"at": at, "psnr": psnr, "back_to_psnr": before})
            self._pending_events = []
        return self.backtracks

    def grow(self, data_psnr: torch.Tensor, settings: Settings,
             kept: torch.Tensor | None = None) -> None:
        """The growth rule of the authors' denoising code, on the device: past the threshold,
        λ and µ grow by ``grow_step`` and the threshold by ``grow_threshold_step`` (dB). A run
        that starts at λ = 0 has no denoiser and keeps λ = 0 (else λ would grow while f(x)
        stays its initial value, the input, and pull x back toward it). ``kept``: False where
        the step was backtracked (nothing grows)."""
        assert isinstance(self.mu, torch.Tensor) and isinstance(self.lam, torch.Tensor)
        up = data_psnr > self.threshold
        if kept is not None:
            up = up & kept
        grown = up.double()
        if settings.lam > 0:
            self.lam.add_(grown * settings.grow_step)
        self.mu.add_(grown * settings.grow_step)
        self.threshold.add_(grown * settings.grow_threshold_step)

    def adam_step(self, grads: list[torch.Tensor], skip: torch.Tensor | None = None,
                  params: list[torch.Tensor] | None = None) -> None:
        """One Adam step of Θ with ``grads`` (:func:`adam_step`); ``skip``: a bool tensor, True
        to leave Θ, the moments and the step count as they are (a backtracked step)."""
        adam_step(self.optimizer, self.params if params is None else params, grads, skip)


@dataclass
class ThetaStep:
    """One run's Θ-step: T_Θ(z) of its forward pass (detached), its loss, the MSE of
    H T_Θ(z) − y, PSNR(H T_Θ(z), y) in dB where a rule needs it (a float64 tensor), and whether
    the step was kept (a bool tensor under ``backtrack_drop``, False: backtracked, Θ restored,
    no Adam step; None: always kept)."""

    out: torch.Tensor
    loss: torch.Tensor
    data_mse: torch.Tensor
    data_psnr: torch.Tensor | None = None
    kept: torch.Tensor | None = None
    #: the backtracking outcome to record (:meth:`NetworkRun.note`), under ``backtrack_drop``
    outcome: torch.Tensor | None = None


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
