"""The network methods: DeepRED (Algorithm 1 of the DeepRED paper) and its special cases.

One class for the three, since each is the one before it with a term removed (REFERENCE.md §1):

- ``deepred``: ADMM — Adam step on Θ for ``½‖H T_Θ(z) − y‖² + µ/2 ‖x − T_Θ(z) − u‖²``, then J
  x-updates (fixed point, Eq. 11, or steepest descent, Eq. 12; :mod:`~deeprestore.solvers.updates`)
  with the denoiser refreshed every ``denoise_every`` rounds, then ``u ← u − x + T_Θ(z)``;
- ``dip``: the Θ-step alone (λ = µ = 0: no x, no u, no denoiser);
- ``dip-tv``: the Θ-step on ``½‖H T_Θ(z) − y‖² + λ_TV · TV(T_Θ(z))``.

Tensors are (N, C, H, W) floats in [0, 1] on the solver's device. Losses are the paper's sums
divided by the number of pixels of x, or each term's mean as the authors' code (``loss_terms``).
The authors' code's other rules are settings too (λ/µ growth, DIP's backtracking, the denoiser's
one-period lag, x from zeros, learning-rate decay; docs/algorithm.md, "Paper vs the authors'
code"). How the steps execute (runs side by side, grouped, fused Adam, layout) is an
:class:`~deeprestore.execution.Execution` passed in.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.execution import (
    DEFAULT_EXECUTION,
    Execution,
    network_arithmetic,
    own_thread_count,
    prepare_network_step,
)
from deeprestore.metrics import psnr_of_mse
from deeprestore.models.skip import SkipNet, make_input
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.grouping import ProblemGroup
from deeprestore.solvers.perturbation import PerturbationStream
from deeprestore.solvers.schedule import DenoiserSchedule
from deeprestore.solvers.updates import (
    dual_update,
    fixed_point_update,
    steepest_descent_update,
    total_variation,
)


class _Run:
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
class _Step:
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
    layout (channels-last on 2026-12-01, NCHW before and after) holds its moments in that
    layout, and torch's fused CPU Adam steps a parameter wrongly from moments of another
    layout (tests/test_engine.py).
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (isinstance(value, torch.Tensor) and value.shape == param.shape
                    and value.stride() != param.stride()):
                state[key] = torch.empty_like(param).copy_(value)


class NetworkAlgorithm(Algorithm):
    """DIP, DIP-TV and DeepRED: Algorithm 1 with ``runs`` independent runs in lock-step.

    Every iteration steps each run once. On a CPU with several torch threads the runs' network
    steps go side by side on worker threads (``execution.side_by_side``), or as one grouped
    network (``execution.grouped``); otherwise one after the other
    (:class:`~deeprestore.execution.Execution`).
    """

    def __init__(
        self,
        problem: Problem,
        settings: Settings,
        device: torch.device,
        denoiser: Denoiser | None,
        execution: Execution = DEFAULT_EXECUTION,
    ) -> None:
        self.problem = problem
        self.settings = settings
        self.device = device
        self.execution = execution
        self.total = settings.iterations
        self.admm = settings.method == "deepred" and (settings.lam > 0 or settings.mu > 0)
        self.use_denoiser = self.admm and settings.lam > 0
        self.denoiser = denoiser if self.use_denoiser else None
        self.denoiser_name = denoiser.name if self.denoiser is not None else None
        self.sigma_f = settings.sigma_f if settings.sigma_f is not None else problem.sigma
        self._threads = torch.get_num_threads()
        #: the calls of f (:mod:`deeprestore.solvers.schedule`); None without a denoiser
        self.schedule = None if self.denoiser is None else DenoiserSchedule(
            self.denoiser, self.sigma_f, every=settings.denoise_every,
            mode=settings.denoiser_mode, lagged=settings.denoiser_lag, threads=self._threads,
            device=device, execution=execution)
        self.pixels = float(problem.x_init.numel())
        self.runs = [
            _Run(problem, settings, settings.seed * 1000 + r, device, execution)
            for r in range(settings.runs)
        ]
        self._autocast = torch.bfloat16 if settings.precision == "bf16" else None
        self._run_workers: list[ThreadPoolExecutor] = []
        self._run_groups: list[list[_Run]] = []
        self._rules_need_psnr = (settings.backtrack_drop > 0
                                 or (self.admm and settings.grow_step > 0))
        self._group: ProblemGroup | None = None
        if execution.grouped and len(self.runs) > 1:
            ProblemGroup([self], execution)  # joins it
        if self._side_by_side():
            self._start_run_workers()

    def join(self, group: ProblemGroup | None) -> None:
        """Have ``group`` step this algorithm's networks (None: step them itself again)."""
        if group is not None:
            self._stop_run_workers()
        self._group = group

    @property
    def group(self) -> ProblemGroup | None:
        """The group that steps this algorithm's networks, if any."""
        return self._group

    def _side_by_side(self) -> bool:
        s = self.settings
        return (self.execution.side_by_side and self.device.type == "cpu" and len(self.runs) > 1
                and self._threads > 1 and not s.compile
                and not (self.use_denoiser and s.denoiser_mode == "async")
                and self._group is None)

    def _start_run_workers(self) -> None:
        """One single-thread executor per group of runs, its torch thread count set once."""
        count = min(len(self.runs), self._threads)
        self._run_groups = [self.runs[w::count] for w in range(count)]
        shares = [self._threads // count + (w < self._threads % count) for w in range(count)]
        self._run_workers = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"run{w}")
                             for w in range(count)]
        for future in [worker.submit(own_thread_count, share)
                       for worker, share in zip(self._run_workers, shares, strict=True)]:
            future.result()
        torch.set_num_threads(self._threads)  # the default for threads created later

    def _step_group(self, group: list[_Run]) -> list[_Step]:
        return [self._theta_step(run) for run in group]

    def _theta_steps(self) -> list[_Step]:
        """Every run's Θ-step, in run order: grouped, side by side on the run workers, or one
        by one."""
        if self._group is not None:
            return self._group.steps_for(self)
        if not self._run_workers:
            return [self._theta_step(run) for run in self.runs]
        futures = [worker.submit(self._step_group, group)
                   for worker, group in zip(self._run_workers, self._run_groups, strict=True)]
        wait(futures)  # all of them, so that no worker still runs when one has failed
        steps: dict[int, _Step] = {}
        for group, future in zip(self._run_groups, futures, strict=True):
            for run, step in zip(group, future.result(), strict=True):
                steps[id(run)] = step
        return [steps[id(run)] for run in self.runs]

    def perturbed_input(self, run: _Run) -> torch.Tensor:
        """z, plus fresh N(0, sigma_noise²) from the run's own generator when asked for."""
        z = run.z
        if self.settings.sigma_noise > 0:
            z = z + self.settings.sigma_noise * run.perturbation.next()
        return z

    def forward_in_precision(self, forward: Callable[[torch.Tensor], torch.Tensor],
                        z: torch.Tensor) -> torch.Tensor:
        """T_Θ(z) in the run's precision (bf16 autocast, TF32 convolutions or float32),
        returned as float32."""
        with network_arithmetic(self.device, self.settings.precision):
            if self._autocast is not None:
                with torch.autocast(self.device.type, dtype=self._autocast):
                    return forward(z).float()
            return forward(z)

    def backward_in_precision(self, loss: torch.Tensor) -> None:
        """Differentiate ``loss`` (a scalar) with respect to Θ, the network's convolutions in
        the run's precision (:func:`~deeprestore.execution.network_arithmetic`)."""
        with network_arithmetic(self.device, self.settings.precision):
            loss.backward()

    def _losses(self, out: torch.Tensor, x: torch.Tensor, u: torch.Tensor,
                mu: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's Θ-loss of Algorithm 1 and the MSE of ``H T − y``: both shape (N,).

        ``loss_terms = "sum"``: ``(½‖H T − y‖² + µ/2 ‖x − T − u‖² + λ_TV TV(T)) / pixels of x``;
        ``"mean"``: ``½ mean(|H T − y|²) + µ/2 mean(|x − T − u|²) + λ_TV TV(T) / pixels of x``,
        each term over its own pixels as the authors' code (the same when H keeps the size).
        ``mu``: a number, or (N, 1) per image (runs whose µ grew apart).
        """
        s = self.settings
        residual = self.problem.operator.forward(out) - self.problem.y
        squares = residual.pow(2).flatten(1)
        data_mse = squares.detach().mean(1)
        # "mean": each term / its own pixel count; "sum": every term / the pixels of x
        reduce = (lambda t: t.mean(1)) if s.loss_terms == "mean" else (lambda t: t.sum(1))
        loss = 0.5 * reduce(squares)
        if self.admm and (s.mu > 0 or s.grow_step > 0):
            weight = mu[:, 0] if isinstance(mu, torch.Tensor) else mu
            loss = loss + 0.5 * weight * reduce((x - out - u).pow(2).flatten(1))
        tv = None
        if s.method == "dip-tv" and s.tv_weight > 0:
            tv = s.tv_weight * torch.stack([total_variation(image) for image in out.split(1)])
        if s.loss_terms == "mean":
            return (loss if tv is None else loss + tv / self.pixels), data_mse
        return (loss if tv is None else loss + tv) / self.pixels, data_mse

    def _theta_step(self, run: _Run) -> _Step:
        run.optimizer.zero_grad(set_to_none=True)
        out = self.forward_in_precision(run.forward, self.perturbed_input(run))
        losses, data_mse = self._losses(out, run.x, run.u, run.mu)
        self.backward_in_precision(losses[0])
        step = _Step(out.detach(), losses[0].detach(), data_mse[0])
        if self._rules_need_psnr:
            step.data_psnr = psnr_of_mse(float(data_mse[0]))
            if self.settings.backtrack_drop > 0:
                step.kept = run.backtrack(step.data_psnr, self.settings.backtrack_drop,
                                          self.iteration)
        if step.kept:
            run.optimizer.step()
        return step

    def piece_losses(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The runs' losses and MSEs (both (runs,)) for their outputs ``out`` (runs, C, H, W)
        computed elsewhere (a :class:`~deeprestore.solvers.grouping.ProblemGroup`)."""
        mus = [run.mu for run in self.runs]
        mu: float | torch.Tensor = (mus[0] if len(set(mus)) == 1 else
                                    torch.tensor(mus, device=out.device).reshape(-1, 1))
        return self._losses(out, torch.cat([run.x for run in self.runs]),
                            torch.cat([run.u for run in self.runs]), mu)

    def piece_steps(self, out: torch.Tensor, losses: torch.Tensor, data_mse: torch.Tensor,
                     iteration: int, params: list[list[torch.Tensor]]) -> list[_Step]:
        """The runs' :class:`_Step` s from a group's forward and backward pass, the reference
        rules applied (``params``: each run's Θ in the group, which a backtrack restores)."""
        steps = [_Step(o, loss, mse) for o, loss, mse in zip(
            out.detach().split(1), losses.detach().unbind(), data_mse.unbind(), strict=True)]
        if self._rules_need_psnr:
            drop = self.settings.backtrack_drop
            for run, step, run_params in zip(self.runs, steps, params, strict=True):
                step.data_psnr = psnr_of_mse(float(step.data_mse))
                if drop > 0:
                    step.kept = run.backtrack(step.data_psnr, drop, iteration, run_params)
        return steps

    def _x_update(self, run: _Run, out: torch.Tensor, refresh: bool) -> None:
        s = self.settings
        lam, mu = run.lam, run.mu
        for step in range(s.inner_steps):
            if (step > 0 and refresh and self.use_denoiser and s.denoiser_mode == "sync"
                    and not s.denoiser_lag):
                assert self.schedule is not None
                run.denoised = self.schedule.call(run.x)  # J > 1: f of the newest x
            if s.x_update == "fixed-point":
                run.x = fixed_point_update(run.denoised, out, run.u, lam, mu)
            else:
                run.x = steepest_descent_update(run.x, run.denoised, out, run.u, lam, mu, s.x_step)
            if s.clip_x:
                run.x = run.x.clamp(0.0, 1.0)
        run.u = dual_update(run.u, run.x, out)

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.settings
        self.iteration += 1
        refresh = (self.iteration - 1) % s.denoise_every == 0
        if self.schedule is not None:
            self.schedule.advance(self.iteration, refresh, self.runs)
        losses = []
        gaps = []
        for run, step in zip(self.runs, self._theta_steps(), strict=True):
            losses.append(step.loss)
            if not step.kept:  # backtracked: this iteration's T is discarded
                if self.admm and run.out is not None:
                    gaps.append(torch.sqrt(torch.mean((run.x - run.out) ** 2)))
                continue
            out = step.out
            if self.admm:
                self._x_update(run, out, refresh)
                gaps.append(torch.sqrt(torch.mean((run.x - out) ** 2)))
                if s.grow_step > 0 and step.data_psnr is not None:
                    run.grow(step.data_psnr, s)
            w = s.ema
            run.ema = out.clone() if run.ema is None else run.ema.mul_(w).add_(out, alpha=1 - w)
            run.out = out
        if s.lr_decay < 1 and self.iteration % s.lr_decay_every == 0:
            self.scale_learning_rate(s.lr_decay)
        loss = torch.stack(losses).mean()
        gap = torch.stack(gaps).mean() if gaps else None
        return loss, gap

    def network_output(self) -> torch.Tensor | None:
        outputs = [run.out for run in self.runs if run.out is not None]
        if not outputs:
            return None
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0)

    def weights(self) -> tuple[float | None, float | None]:
        if not self.admm:
            return None, None
        count = len(self.runs)
        return (sum(run.lam for run in self.runs) / count,
                sum(run.mu for run in self.runs) / count)

    def backtrack_events(self) -> list[dict[str, Any]]:
        return [{**event, "run": r} for r, run in enumerate(self.runs)
                for event in run.backtracks]

    def _stop_run_workers(self) -> None:
        for worker in self._run_workers:
            worker.shutdown(wait=True)
        self._run_workers = []
        self._run_groups = []

    def close(self) -> None:
        """Stop the background denoiser (waits for a call in flight) and the run workers; leave
        the group that stepped the networks (their state goes back to the runs)."""
        self._stop_run_workers()
        if self._group is not None:
            self._group.leave(self)
        for run in self.runs:
            run.perturbation.close()
        if self.schedule is not None:
            self.schedule.close()

    stateful = True

    def state_dict(self) -> dict[str, Any]:
        """The runs' states, the iteration, and the denoiser bookkeeping. In ``async`` mode a
        call in flight is not part of it (a resumed run starts a fresh one)."""
        if self._group is not None:
            self._group.write_back(self)
        bookkeeping = ({"denoiser_calls": 0, "snapshot_at": None, "pending_at": 1}
                       if self.schedule is None else self.schedule.state_dict())
        return {"iteration": self.iteration, **bookkeeping,
                "runs": [run.state_dict() for run in self.runs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["runs"]) != len(self.runs):
            raise ValueError(f"the saved state has {len(state['runs'])} runs, not "
                             f"{len(self.runs)}")
        self.iteration = int(state["iteration"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state)
        for run, saved in zip(self.runs, state["runs"], strict=True):
            run.load_state_dict(saved)
        if self._group is not None:
            self._group.read_back(self)

    def scale_learning_rate(self, factor: float) -> float:
        if self._group is not None:
            return self._group.scale_learning_rate(self, factor)
        rate = 0.0
        for optimizer in (run.optimizer for run in self.runs):
            for group in optimizer.param_groups:
                group["lr"] *= factor
                rate = group["lr"]
        return rate

    def _run_estimate(self, run: _Run) -> torch.Tensor:
        kind = self.settings.output
        if kind == "ema" or (not self.admm and kind in ("x", "x-u")):
            assert run.ema is not None
            return run.ema
        if kind == "network":
            assert run.out is not None
            return run.out
        if kind == "x":
            return run.x
        return (run.x - run.u).clamp(0.0, 1.0)

    def estimate(self) -> torch.Tensor:
        if self.iteration == 0:
            return self.problem.x_init
        estimates = [self._run_estimate(run) for run in self.runs]
        return estimates[0] if len(estimates) == 1 else torch.stack(estimates).mean(dim=0)

    @property
    def denoiser_calls(self) -> int:  # type: ignore[override]
        """How often f ran (:class:`~deeprestore.solvers.schedule.DenoiserSchedule`)."""
        return 0 if self.schedule is None else self.schedule.calls

    def denoiser_age(self) -> int | None:
        return None if self.schedule is None else self.schedule.age(self.iteration)
