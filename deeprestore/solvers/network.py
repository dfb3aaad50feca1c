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

from collections.abc import Callable
from typing import Any

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution, network_arithmetic
from deeprestore.metrics import psnr_of_mse
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.grouping import ProblemGroup
from deeprestore.solvers.network_run import NetworkRun, ThetaStep
from deeprestore.solvers.schedule import DenoiserSchedule
from deeprestore.solvers.side_by_side import RunWorkers
from deeprestore.solvers.updates import (
    dual_update,
    fixed_point_update,
    steepest_descent_update,
    total_variation,
)


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
            NetworkRun(problem, settings, settings.seed * 1000 + r, device, execution)
            for r in range(settings.runs)
        ]
        self._autocast = torch.bfloat16 if settings.precision == "bf16" else None
        self._workers: RunWorkers[NetworkRun] | None = None
        self._rules_need_psnr = (settings.backtrack_drop > 0
                                 or (self.admm and settings.grow_step > 0))
        self._group: ProblemGroup | None = None
        if execution.grouped and len(self.runs) > 1:
            ProblemGroup([self], execution)  # joins it
        if self._side_by_side():
            self._workers = RunWorkers(self.runs, self._threads)

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

    def _theta_steps(self) -> list[ThetaStep]:
        """Every run's Θ-step, in run order: grouped, side by side on the run workers, or one
        by one."""
        if self._group is not None:
            return self._group.steps_for(self)
        if self._workers is None:
            return [self._theta_step(run) for run in self.runs]
        return self._workers.steps(self._theta_step)

    def perturbed_input(self, run: NetworkRun) -> torch.Tensor:
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

    def _theta_step(self, run: NetworkRun) -> ThetaStep:
        run.optimizer.zero_grad(set_to_none=True)
        out = self.forward_in_precision(run.forward, self.perturbed_input(run))
        losses, data_mse = self._losses(out, run.x, run.u, run.mu)
        self.backward_in_precision(losses[0])
        step = ThetaStep(out.detach(), losses[0].detach(), data_mse[0])
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
                    iteration: int, params: list[list[torch.Tensor]]) -> list[ThetaStep]:
        """The runs' :class:`~deeprestore.solvers.network_run.ThetaStep` s from a group's
        forward and backward pass, the reference rules applied (``params``: each run's Θ in the
        group, which a backtrack restores)."""
        steps = [ThetaStep(o, loss, mse) for o, loss, mse in zip(
            out.detach().split(1), losses.detach().unbind(), data_mse.unbind(), strict=True)]
        if self._rules_need_psnr:
            drop = self.settings.backtrack_drop
            for run, step, run_params in zip(self.runs, steps, params, strict=True):
                step.data_psnr = psnr_of_mse(float(step.data_mse))
                if drop > 0:
                    step.kept = run.backtrack(step.data_psnr, drop, iteration, run_params)
        return steps

    def _x_update(self, run: NetworkRun, out: torch.Tensor, refresh: bool) -> None:
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
        if self._workers is not None:
            self._workers.close()
            self._workers = None

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

    def _run_estimate(self, run: NetworkRun) -> torch.Tensor:
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
