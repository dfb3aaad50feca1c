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
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.grouping import ProblemGroup
from deeprestore.solvers.network_run import NetworkRun, ThetaStep
from deeprestore.solvers.schedule import DenoiserSchedule
from deeprestore.solvers.side_by_side import RunWorkers
from deeprestore.solvers.step_graph import RunStepper, functional_pass
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
        #: how a run's iteration executes (``execution.step_graph``)
        self._stepper = RunStepper(self)
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
                and self._threads > 1 and not s.compile and self.execution.step_graph == "eager"
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

    def perturbed_input(self, run: NetworkRun, noise: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """z, plus ``sigma_noise`` times ``noise`` (default: the next N(0, 1) draw of the run's
        stream) when asked for."""
        if self.settings.sigma_noise <= 0:
            return run.z
        return run.z + self.settings.sigma_noise * (run.perturbation.next() if noise is None
                                                    else noise)

    def forward_in_precision(self, forward: Callable[[torch.Tensor], torch.Tensor],
                        z: torch.Tensor) -> torch.Tensor:
        """T_Θ(z) in the run's precision (bf16 autocast, TF32 convolutions or float32),
        returned as float32."""
        with network_arithmetic(self.device, self.settings.precision):
            if self._autocast is not None:
                with torch.autocast(self.device.type, dtype=self._autocast):
                    return forward(z).float()
            return forward(z)

    def gradient_in_precision(self, loss: torch.Tensor,
                              params: list[torch.Tensor]) -> list[torch.Tensor]:
        """∂``loss``/∂``params`` (``loss`` a scalar), the network's convolutions in the run's
        precision; returned, not accumulated into ``.grad`` (no zeroing, no accumulation ops)."""
        with network_arithmetic(self.device, self.settings.precision):
            return list(torch.autograd.grad(loss, params))

    def losses(self, out: torch.Tensor, x: torch.Tensor, u: torch.Tensor,
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
            weight = mu[:, 0] if isinstance(mu, torch.Tensor) and mu.dim() == 2 else mu
            loss = loss + 0.5 * weight * reduce((x - out - u).pow(2).flatten(1))
        tv = None
        if s.method == "dip-tv" and s.tv_weight > 0:
            tv = s.tv_weight * torch.stack([total_variation(image) for image in out.split(1)])
        if s.loss_terms == "mean":
            return (loss if tv is None else loss + tv / self.pixels), data_mse
        return (loss if tv is None else loss + tv) / self.pixels, data_mse

    def _theta_step(self, run: NetworkRun, noise: torch.Tensor | None = None) -> ThetaStep:
        """One run's Θ-step: forward, loss, gradient, the reference rules, Adam (``noise``:
        z's perturbation, drawn from the run's stream when None)."""
        z = self.perturbed_input(run, noise)
        if self.execution.step_graph == "compile":
            out, loss, data_mse, grads = functional_pass(self, run, z)
        else:
            out = self.forward_in_precision(run.forward, z)
            losses, data_mse = self.losses(out, run.x, run.u, run.mu)
            grads = self.gradient_in_precision(losses[0], run.params)
            out, loss, data_mse = out.detach(), losses[0].detach(), data_mse[0]
        step = self.ruled_step(run, out, loss, data_mse)
        run.adam_step(grads, None if step.kept is None else ~step.kept)
        return step

    def ruled_step(self, run: NetworkRun, out: torch.Tensor, loss: torch.Tensor,
                   data_mse: torch.Tensor, params: list[torch.Tensor] | None = None
                   ) -> ThetaStep:
        """A run's :class:`~deeprestore.solvers.network_run.ThetaStep` with the reference rules
        applied on the device: PSNR(H T_Θ(z), y) where a rule needs it, and DIP's backtracking
        (``params``: Θ's views when it lives in a grouped network)."""
        step = ThetaStep(out, loss, data_mse)
        if self._rules_need_psnr:
            step.data_psnr = -10.0 * torch.log10(data_mse.double())
            if self.settings.backtrack_drop > 0:
                step.kept, step.outcome = run.backtrack(
                    step.data_psnr, self.settings.backtrack_drop, params)
        return step

    def step_run(self, run: NetworkRun, noise: torch.Tensor | None,
                 refresh: bool) -> tuple[ThetaStep, torch.Tensor | None]:
        """One iteration of one run after f(x) is made: the Θ-step, then (DeepRED) the
        x-updates, u and the growth rule, then the EMA — everything between two denoiser calls,
        on tensors only, updated in place: the region a CUDA graph captures and
        ``torch.compile(fullgraph=True)`` traces (``execution.step_graph``). Returns the step
        and the gap (None without x)."""
        step = self._theta_step(run, noise)
        return step, self._finish_step(run, step, refresh)

    def _finish_step(self, run: NetworkRun, step: ThetaStep,
                     refresh: bool) -> torch.Tensor | None:
        """After a run's Θ-step: x, u, λ/µ growth (DeepRED), the EMA; returns the gap."""
        gap = None
        if self.admm:
            gap = self._x_update(run, step.out, refresh, step.kept)
            if self.settings.grow_step > 0 and step.data_psnr is not None:
                run.grow(step.data_psnr, self.settings, step.kept)
        self._follow_output(run, step.out, step.kept)
        return gap

    def piece_losses(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The runs' losses and MSEs (both (runs,)) for their outputs ``out`` (runs, C, H, W)
        computed elsewhere (a :class:`~deeprestore.solvers.grouping.ProblemGroup`)."""
        mus = [run.mu for run in self.runs]
        mu: float | torch.Tensor
        if all(isinstance(m, float) for m in mus) and len(set(mus)) == 1:
            mu = mus[0]
        else:
            mu = torch.stack([torch.as_tensor(m, device=out.device) for m in mus]).float()
            mu = mu.reshape(-1, 1)
        return self.losses(out, torch.cat([run.x for run in self.runs]),
                            torch.cat([run.u for run in self.runs]), mu)

    def piece_steps(self, out: torch.Tensor, losses: torch.Tensor, data_mse: torch.Tensor,
                    iteration: int, params: list[list[torch.Tensor]]) -> list[ThetaStep]:
        """The runs' :class:`~deeprestore.solvers.network_run.ThetaStep` s from a group's
        forward and backward pass, the reference rules applied (``params``: each run's Θ in the
        group, which a backtrack restores)."""
        del iteration  # the outcomes are recorded with the member's own iteration
        return [self.ruled_step(run, o, loss, mse, run_params)
                for run, o, loss, mse, run_params in zip(
                    self.runs, out.detach().split(1), losses.detach().unbind(),
                    data_mse.unbind(), params, strict=True)]

    def _x_update(self, run: NetworkRun, out: torch.Tensor, refresh: bool,
                  kept: torch.Tensor | None) -> torch.Tensor:
        """J x-updates then the dual update, in place in ``run.x`` and ``run.u`` (left as
        they were where ``kept`` is False); returns the gap RMS(x − T_Θ(z))."""
        s = self.settings
        lam, mu = run.lam, run.mu
        x = run.x
        for step in range(s.inner_steps):
            if (step > 0 and refresh and self.use_denoiser and s.denoiser_mode == "sync"
                    and not s.denoiser_lag):
                assert self.schedule is not None
                run.denoised.copy_(self.schedule.call(x))  # J > 1: f of the newest x
            if s.x_update == "fixed-point":
                x = fixed_point_update(run.denoised, out, run.u, lam, mu)
            else:
                x = steepest_descent_update(x, run.denoised, out, run.u, lam, mu, s.x_step)
            if s.clip_x:
                x = x.clamp(0.0, 1.0)
        if kept is None:
            run.x.copy_(x)
            run.u.sub_(run.x).add_(out)  # u ← u − x + T_Θ(z)
            return torch.sqrt(torch.mean((run.x - out) ** 2))
        last = out if run.out is None else run.out  # the first step is always kept
        gap = torch.where(kept, torch.sqrt(torch.mean((x - out) ** 2)),
                          torch.sqrt(torch.mean((run.x - last) ** 2)))
        run.u.copy_(torch.where(kept, dual_update(run.u, x, out), run.u))
        run.x.copy_(torch.where(kept, x, run.x))
        return gap

    def _follow_output(self, run: NetworkRun, out: torch.Tensor,
                       kept: torch.Tensor | None) -> None:
        """The run's EMA and last output after a step (unchanged where ``kept`` is False)."""
        w = self.settings.ema
        if run.ema is None:
            run.ema = out.clone()  # the first step is always kept
        elif kept is None:
            run.ema.mul_(w).add_(out, alpha=1 - w)
        else:
            run.ema.copy_(torch.where(kept, run.ema.mul(w).add(out, alpha=1 - w), run.ema))
        if run.out is None:
            run.out = out.clone()
        else:  # in place: the last output keeps its storage (a captured graph reads it)
            run.out.copy_(out if kept is None else torch.where(kept, out, run.out))

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.settings
        self.iteration += 1
        refresh = (self.iteration - 1) % s.denoise_every == 0
        if self.schedule is not None:
            self.schedule.advance(self.iteration, refresh, self.runs)
        if self._group is not None or self._workers is not None:
            steps = self._theta_steps()
            done = [(step, self._finish_step(run, step, refresh))
                    for run, step in zip(self.runs, steps, strict=True)]
        else:
            done = [self._stepper(run, refresh) for run in self.runs]
        for run, (step, _) in zip(self.runs, done, strict=True):
            if step.outcome is not None:
                run.note(self.iteration, step.outcome)
        if s.lr_decay < 1 and self.iteration % s.lr_decay_every == 0:
            self._scale_rates(s.lr_decay)
        losses = [step.loss for step, _ in done]
        gaps = [gap for _, gap in done if gap is not None]
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        gap = (gaps[0] if len(gaps) == 1 else torch.stack(gaps).mean()) if gaps else None
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
        return (float(sum(run.lam for run in self.runs)) / count,
                float(sum(run.mu for run in self.runs)) / count)

    def backtrack_events(self) -> list[dict[str, Any]]:
        return [{**event, "run": r} for r, run in enumerate(self.runs)
                for event in run.events()]

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
        self._scale_rates(factor)
        return float(self.runs[-1].optimizer.param_groups[-1]["lr"])

    def _scale_rates(self, factor: float) -> None:
        """Multiply every run's learning rate by ``factor`` (in place where it is a tensor:
        nothing read back)."""
        if self._group is not None:
            self._group.scale_learning_rate(self, factor)
            return
        for optimizer in (run.optimizer for run in self.runs):
            for group in optimizer.param_groups:
                group["lr"] *= factor

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
