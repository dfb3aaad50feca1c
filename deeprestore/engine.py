"""One engine for every method: Algorithm 1 of the DeepRED paper and its special cases.

The engine sees a :class:`Problem` (the observation ``y``, the degradation operator ``H`` with
``forward``/``adjoint``, the size of the unknown image, an optional reference) and a
:class:`~deeprestore.settings.Settings`; it never knows which task it serves.

Following SigPy's split, an *algorithm* does one iteration per :meth:`Algorithm.update` and says
when it is :meth:`~Algorithm.done`; the :class:`Runner` drives it, logs every ``log_every``
iterations (the only host↔device synchronisation of the loop) and reports progress through a
callback. Methods (REFERENCE.md §1):

- ``deepred``: ADMM — Adam step on Θ for ``½‖H T_Θ(z) − y‖² + µ/2 ‖x − T_Θ(z) − u‖²``, then J
  x-updates (fixed point, Eq. 11, or steepest descent, Eq. 12) with the denoiser refreshed every
  ``denoise_every`` rounds, then ``u ← u − x + T_Θ(z)``;
- ``dip``: the Θ-step alone (λ = µ = 0: no x, no u, no denoiser);
- ``dip-tv``: the Θ-step on ``½‖H T_Θ(z) − y‖² + λ_TV · TV(T_Θ(z))``;
- ``red``: RED without a network, fixed-point iterations on x;
- ``nlm``, ``bm3d``, …: a classical baseline, computed once.

Tensors are (N, C, H, W) floats in [0, 1] on the engine's device. Losses are the paper's sums
divided by the number of pixels of x, or each term's mean as the authors' code (``loss_terms``).
The authors' code's other rules are settings too (λ/µ growth, DIP's backtracking, the denoiser's
one-period lag, x from zeros, learning-rate decay; docs/algorithm.md, "Paper vs the authors'
code").
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from deeprestore.control import Interrupted, OutOfTime, RunControl, SignalFlag
from deeprestore.denoisers import Denoiser, get_denoiser
from deeprestore.execution import (
    DEFAULT_EXECUTION,
    Execution,
    configure_backends,
    own_thread_count,
    prepare_network_step,
)
from deeprestore.grouping import ProblemGroup
from deeprestore.metrics import psnr_of_mse
from deeprestore.networks import SkipNet, make_input
from deeprestore.settings import NETWORK_METHODS, Settings
from deeprestore.stopping import VarianceStop


class Operator(Protocol):
    """A degradation operator H (see :mod:`deeprestore.operators`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Problem:
    """What is to be restored.

    ``y``: observation (1, C, h, w) in [0, 1]; ``operator``: H, mapping (1, C, H, W) to y's
    shape; ``x_init``: the starting point for x (1, C, H, W) (``y`` itself when H keeps the
    size); ``sigma``: the noise std of y on the 0–255 scale (used by baselines that need it);
    ``reference``: the clean image (1, C, H, W) for PSNR, if known; ``psnr``: the PSNR protocol.
    """

    y: torch.Tensor
    operator: Operator
    x_init: torch.Tensor
    sigma: float = 0.0
    reference: torch.Tensor | None = None
    psnr: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.x_init.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x_init.shape[-2]), int(self.x_init.shape[-1])


@dataclass
class LogRow:
    """One logged iteration: loss of the Θ-step (or RED objective), PSNR of the current estimate
    against the reference (None without one), ‖x − T_Θ(z)‖ RMS per pixel (None when no x),
    wall seconds since the start, the age in iterations of the denoised image in use, and the
    λ and µ in use (DeepRED; they change under the growth rule, ``grow_step``)."""

    iteration: int
    loss: float
    psnr: float | None
    gap: float | None
    seconds: float
    denoiser_age: int | None = None
    lam: float | None = None
    mu: float | None = None
    #: the automatic stop's signal (``stop = "auto"``): the moving variance of the outputs
    stop_signal: float | None = None


@dataclass
class Progress:
    """What the engine reports to its callback every ``log_every`` iterations."""

    iteration: int
    total: int
    loss: float
    psnr: float | None
    seconds: float


@dataclass
class Result:
    """The restored image (1, C, H, W) on the CPU, the log and a few counters."""

    image: torch.Tensor
    log: list[LogRow]
    iterations: int
    seconds: float
    denoiser_calls: int = 0
    denoiser: str | None = None
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    backtracks: list[dict[str, Any]] = field(default_factory=list)
    #: the automatic stop's report (``stop = "auto"``): stopped_at, detected_at, reason
    stop: dict[str, Any] | None = None


ProgressCallback = Callable[[Progress], None]


class Algorithm:
    """One iterative method. ``update()`` does one iteration and returns device tensors
    ``(loss, gap)``; ``estimate()`` is the current restored image (1, C, H, W)."""

    total: int = 1
    iteration: int = 0
    denoiser_calls: int = 0
    denoiser_name: str | None = None

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def estimate(self) -> torch.Tensor:
        raise NotImplementedError

    def done(self) -> bool:
        return self.iteration >= self.total

    def denoiser_age(self) -> int | None:
        return None

    def network_output(self) -> torch.Tensor | None:
        """The latest T_Θ(z) (1, C, H, W), averaged over runs; None for methods without one."""
        return None

    def weights(self) -> tuple[float | None, float | None]:
        """The λ and µ in use (None where the method has none)."""
        return None, None

    def backtrack_events(self) -> list[dict[str, Any]]:
        """The backtracks so far (``backtrack_drop``): iteration, run, PSNRs."""
        return []

    def close(self) -> None:
        """Release background resources (nothing by default)."""

    #: whether :meth:`state_dict` / :meth:`load_state_dict` work (checkpoints and rollback)
    stateful = False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from the current iteration (copies)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        raise NotImplementedError

    def scale_learning_rate(self, factor: float) -> float:
        """Multiply the learning rate by ``factor``; return the new rate."""
        raise NotImplementedError


def total_variation(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Isotropic total variation Σ sqrt(|∂h x|² + |∂v x|²) of (N, C, H, W), per channel, summed.

    Forward differences; the last row/column has no difference across the border.
    """
    dh = torch.zeros_like(x)
    dv = torch.zeros_like(x)
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return torch.sqrt(dh**2 + dv**2 + eps).sum()


def fixed_point_update(
    denoised: torch.Tensor, out: torch.Tensor, u: torch.Tensor, lam: float, mu: float
) -> torch.Tensor:
    """Eq. 11: ``x = (λ f(x) + µ (T_Θ(z) + u)) / (λ + µ)``. All tensors (N, C, H, W)."""
    return (lam * denoised + mu * (out + u)) / (lam + mu)


def steepest_descent_update(
    x: torch.Tensor,
    denoised: torch.Tensor,
    out: torch.Tensor,
    u: torch.Tensor,
    lam: float,
    mu: float,
    step: float,
) -> torch.Tensor:
    """Eq. 12: ``x − c [λ (x − f(x)) + µ (x − T_Θ(z) − u)]`` with step ``c``."""
    return x - step * (lam * (x - denoised) + mu * (x - out - u))


def dual_update(u: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The scaled dual (Lagrange multiplier) update ``u ← u − x + T_Θ(z)``."""
    return u - x + out


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
            self.net, self.z, settings.lr, device, execution)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.net
        if settings.compile:
            self.forward = torch.compile(self.net)  # type: ignore[assignment]
        if device.type == "cpu":
            self.noise_generator = generator
        else:
            self.noise_generator = torch.Generator(device=device).manual_seed(seed)
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
            "noise_generator": self.noise_generator.get_state(),
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
        self.noise_generator.set_state(state["noise_generator"].cpu()
                                       if self.noise_generator.device.type == "cpu"
                                       else state["noise_generator"])
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
        ``grow_step`` and the threshold by ``grow_threshold_step`` (dB)."""
        if data_psnr > self.threshold:
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
        self.pixels = float(problem.x_init.numel())
        self.runs = [
            _Run(problem, settings, settings.seed * 1000 + r, device, execution)
            for r in range(settings.runs)
        ]
        self._autocast = torch.bfloat16 if settings.precision == "bf16" else None
        self._snapshot_at: int | None = None  # iteration whose x the f(x) in use was made from
        self._worker: ThreadPoolExecutor | None = None
        self._pending: Future[torch.Tensor] | None = None
        self._threads = torch.get_num_threads()
        if self.use_denoiser and settings.denoiser_mode == "async":
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="denoiser")
        self._run_workers: list[ThreadPoolExecutor] = []
        self._run_groups: list[list[_Run]] = []
        self._pending_at = 1  # the lagged schedule's snapshot: x₀, "taken" at round 1
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

    def _side_by_side(self) -> bool:
        s = self.settings
        return (self.execution.side_by_side and self.device.type == "cpu" and len(self.runs) > 1
                and self._threads > 1 and not s.compile and self._worker is None
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

    def _perturbed_input(self, run: _Run) -> torch.Tensor:
        """z, plus fresh N(0, sigma_noise²) from the run's own generator when asked for."""
        z = run.z
        if self.settings.sigma_noise > 0:
            noise = torch.randn(
                z.shape, generator=run.noise_generator, device=z.device, dtype=z.dtype
            )
            z = z + self.settings.sigma_noise * noise
        return z

    def _network_output(self, forward: Callable[[torch.Tensor], torch.Tensor],
                        z: torch.Tensor) -> torch.Tensor:
        if self._autocast is not None:
            with torch.autocast(self.device.type, dtype=self._autocast):
                return forward(z).float()
        return forward(z)

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
        out = self._network_output(run.forward, self._perturbed_input(run))
        losses, data_mse = self._losses(out, run.x, run.u, run.mu)
        losses[0].backward()
        step = _Step(out.detach(), losses[0].detach(), data_mse[0])
        if self._rules_need_psnr:
            step.data_psnr = psnr_of_mse(float(data_mse[0]))
            if self.settings.backtrack_drop > 0:
                step.kept = run.backtrack(step.data_psnr, self.settings.backtrack_drop,
                                          self.iteration)
        if step.kept:
            run.optimizer.step()
        return step

    def _piece_losses(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The runs' losses and MSEs (both (runs,)) for their outputs ``out`` (runs, C, H, W)
        computed elsewhere (a :class:`~deeprestore.grouping.ProblemGroup`)."""
        mus = [run.mu for run in self.runs]
        mu: float | torch.Tensor = (mus[0] if len(set(mus)) == 1 else
                                    torch.tensor(mus, device=out.device).reshape(-1, 1))
        return self._losses(out, torch.cat([run.x for run in self.runs]),
                            torch.cat([run.u for run in self.runs]), mu)

    def _piece_steps(self, out: torch.Tensor, losses: torch.Tensor, data_mse: torch.Tensor,
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

    def _sharing(self) -> bool:
        return self.execution.share_cores and self.device.type == "cpu" and self._threads > 1

    def _denoise(self, x: torch.Tensor, threads: int | None) -> torch.Tensor:
        assert self.denoiser is not None
        self.denoiser_calls += 1
        return self.denoiser(x, self.sigma_f, threads=threads)

    def _denoise_runs(self) -> None:
        """Sync mode: f of every run's current x, in one batched call on all of torch's threads."""
        denoised = self._denoise(torch.cat([run.x for run in self.runs]), self._threads)
        for run, image in zip(self.runs, denoised.split(1), strict=True):
            run.denoised = image
        self._snapshot_at = self.iteration

    def _denoise_lagged(self) -> None:
        """Sync mode with ``denoiser_lag`` (the authors' thread, made deterministic): f of the x
        snapshot taken one denoiser period ago becomes f(x); the current x is the next snapshot."""
        snapshots = []
        for run in self.runs:
            assert run.pending is not None
            snapshots.append(run.pending)
        denoised = self._denoise(torch.cat(snapshots), self._threads)
        for run, image in zip(self.runs, denoised.split(1), strict=True):
            run.denoised = image
            run.pending = run.x.clone()
        self._snapshot_at, self._pending_at = self._pending_at, self.iteration

    def _poll_background(self, refresh: bool) -> None:
        """Async mode: apply a finished background result; start a new call on refresh rounds."""
        if self._pending is not None and self._pending.done():
            denoised = self._pending.result()
            for run, image in zip(self.runs, denoised.split(1), strict=True):
                run.denoised = image.to(run.x.device)
            self._snapshot_at = self._pending_at
            self._pending = None
            self._share_cores(False)
        if refresh and self._pending is None:
            assert self._worker is not None
            snapshot = torch.cat([run.x for run in self.runs]).clone()
            self._share_cores(True)
            threads = (self._threads - torch.get_num_threads()) if self._sharing() else None
            self._pending = self._worker.submit(self._denoise, snapshot, threads)
            self._pending_at = self.iteration

    def _share_cores(self, in_flight: bool) -> None:
        """On the CPU, give one of torch's threads to a CPU denoiser while its call is in flight.

        Both compete for the same cores; oversubscribed cores stall badly (see
        docs/performance.md), so the network runs on one thread fewer until the call returns and
        a ``threaded`` denoiser (bm3d) runs on the thread it was given.
        """
        if not self._sharing() or self.denoiser is None:
            return
        torch.set_num_threads(self._threads - 1 if in_flight else self._threads)

    def _x_update(self, run: _Run, out: torch.Tensor, refresh: bool) -> None:
        s = self.settings
        lam, mu = run.lam, run.mu
        for step in range(s.inner_steps):
            if (step > 0 and refresh and self.use_denoiser and s.denoiser_mode == "sync"
                    and not s.denoiser_lag):
                run.denoised = self._denoise(run.x, self._threads)  # J > 1: f of the newest x
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
        if self.use_denoiser:
            if self._worker is not None:
                self._poll_background(refresh)
            elif s.denoiser_lag:
                if self.iteration % s.denoise_every == 0:
                    self._denoise_lagged()
            elif refresh:
                self._denoise_runs()
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
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
            self._pending = None
            self._share_cores(False)

    stateful = True

    def state_dict(self) -> dict[str, Any]:
        """The runs' states, the iteration, and the denoiser bookkeeping. In ``async`` mode a
        call in flight is not part of it (a resumed run starts a fresh one)."""
        if self._group is not None:
            self._group.write_back(self)
        return {"iteration": self.iteration, "denoiser_calls": self.denoiser_calls,
                "snapshot_at": self._snapshot_at, "pending_at": self._pending_at,
                "runs": [run.state_dict() for run in self.runs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["runs"]) != len(self.runs):
            raise ValueError(f"the saved state has {len(state['runs'])} runs, not "
                             f"{len(self.runs)}")
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            self._share_cores(False)
        self.iteration = int(state["iteration"])
        self.denoiser_calls = int(state["denoiser_calls"])
        self._snapshot_at = state["snapshot_at"]
        self._pending_at = int(state.get("pending_at", 1))
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

    def denoiser_age(self) -> int | None:
        if not self.use_denoiser or self._snapshot_at is None:
            return None
        return self.iteration - self._snapshot_at


class REDAlgorithm(Algorithm):
    """RED without a network (Romano et al.): minimise ``½‖Hx − y‖² + λ/2 xᵀ(x − f(x))``.

    Fixed-point iterations: ``(HᵀH + λI) x_{k+1} = Hᵀy + λ f(x_k)``. For H = I this is the closed
    form ``x = (y + λ f(x)) / (1 + λ)``; otherwise the linear system is solved by
    ``cg_steps`` conjugate-gradient steps warm-started at x_k (HᵀH + λI is symmetric positive
    definite, so CG converges; it needs only H and Hᵀ, no inverse).
    """

    def __init__(self, problem: Problem, settings: Settings, denoiser: Denoiser) -> None:
        self.problem = problem
        self.settings = settings
        self.total = settings.iterations
        self.denoiser = denoiser
        self.denoiser_name = denoiser.name
        self.sigma_f = settings.sigma_f if settings.sigma_f is not None else problem.sigma
        self.x = problem.x_init.clone()
        self.identity = getattr(problem.operator, "is_identity", False) or (
            type(problem.operator).__name__ == "Identity"
        )
        self.hty = problem.operator.adjoint(problem.y)

    def _normal(self, v: torch.Tensor) -> torch.Tensor:
        op = self.problem.operator
        return op.adjoint(op.forward(v)) + self.settings.lam * v

    def _solve(self, rhs: torch.Tensor) -> torch.Tensor:
        x = self.x.clone()
        r = rhs - self._normal(x)
        p = r.clone()
        rr = torch.sum(r * r)
        for _ in range(self.settings.cg_steps):
            ap = self._normal(p)
            alpha = rr / torch.sum(p * ap).clamp_min(1e-30)
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = torch.sum(r * r)
            p = r + (rr_new / rr.clamp_min(1e-30)) * p
            rr = rr_new
        return x

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.iteration += 1
        lam = self.settings.lam
        denoised = self.denoiser(self.x, self.sigma_f)
        self.denoiser_calls += 1
        rhs = self.hty + lam * denoised
        self.x = rhs / (1.0 + lam) if self.identity else self._solve(rhs)
        if self.settings.clip_x:
            self.x = self.x.clamp(0.0, 1.0)
        residual = self.problem.operator.forward(self.x) - self.problem.y
        prior = torch.sum(self.x * (self.x - denoised))
        loss = (0.5 * residual.pow(2).sum() + 0.5 * lam * prior) / float(self.x.numel())
        return loss, None

    def estimate(self) -> torch.Tensor:
        return self.x


class OneShotAlgorithm(Algorithm):
    """A classical baseline computed once: ``image = function(problem)``."""

    def __init__(
        self, problem: Problem, function: Callable[[Problem], torch.Tensor], name: str
    ) -> None:
        self.problem = problem
        self.function = function
        self.name = name
        self.total = 1
        self.result = problem.x_init

    def update(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.iteration += 1
        self.result = self.function(self.problem).clamp(0.0, 1.0)
        loss = 0.5 * torch.mean((self.problem.operator.forward(self.result) - self.problem.y) ** 2)
        return loss, None

    def estimate(self) -> torch.Tensor:
        return self.result


def _denoiser_baseline(name: str, sigma: float | None) -> Callable[[Problem], torch.Tensor]:
    def run(problem: Problem) -> torch.Tensor:
        return get_denoiser(name)(problem.y, problem.sigma if sigma is None else sigma)

    return run


def make_algorithm(
    problem: Problem,
    settings: Settings,
    device: torch.device,
    denoiser: Denoiser | None = None,
    baselines: dict[str, Callable[[Problem], torch.Tensor]] | None = None,
    execution: Execution = DEFAULT_EXECUTION,
) -> Algorithm:
    """The algorithm object for ``settings.method`` (see the module docstring), its steps
    executed as ``execution`` says (network methods)."""
    method = settings.method
    if method in NETWORK_METHODS:
        if method == "deepred" and settings.lam > 0 and denoiser is None:
            denoiser = get_denoiser(settings.denoiser)
        return NetworkAlgorithm(problem, settings, device, denoiser, execution)
    if method == "red":
        return REDAlgorithm(problem, settings, denoiser or get_denoiser(settings.denoiser))
    if method in ("nlm", "bm3d"):
        baseline = _denoiser_baseline(method, settings.sigma_f)
        algorithm = OneShotAlgorithm(problem, baseline, method)
        algorithm.denoiser_name = method
        return algorithm
    if baselines and method in baselines:
        return OneShotAlgorithm(problem, baselines[method], method)
    raise ValueError(f"method {method!r} is not available for this problem")


class Runner:
    """Drives an :class:`Algorithm` to the end, logging every ``log_every`` iterations.

    With a :class:`~deeprestore.control.RunControl`: continues from a saved state, saves states
    (every ``checkpoint_every`` iterations, and when SIGINT/SIGTERM arrives — then it raises
    :class:`~deeprestore.control.Interrupted` between two iterations), and when the loss or x
    turns NaN/Inf rolls back to the last logged good state with the learning rate halved, at
    most ``max_rollbacks`` times (stateful algorithms only; otherwise the run fails at once).

    With a ``stopper`` (:class:`~deeprestore.stopping.VarianceStop`) it feeds it every
    iteration's network output and ends the run early when the stopper is done; the image
    returned is then the stopper's estimate at its detected iteration.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        problem: Problem,
        log_every: int,
        callback: ProgressCallback | None = None,
        control: RunControl | None = None,
        stopper: VarianceStop | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.stopper = stopper
        self.problem = problem
        self.log_every = log_every
        self.callback = callback
        self.control = control if control is not None else RunControl()
        self.log: list[LogRow] = []
        self.rollbacks: list[dict[str, Any]] = []
        self._offset = 0.0  # seconds already spent before a resume
        self._resumed = False

    def _measure(self) -> torch.Tensor | None:
        if self.problem.reference is None or self.problem.psnr is None:
            return None
        return self.problem.psnr(self.algorithm.estimate(), self.problem.reference)

    def run(self) -> Result:
        """Iterate until done; return the result with the log."""
        try:
            with SignalFlag() as flag:
                return _drive(self.iterations(flag))
        finally:
            self.algorithm.close()

    def state(self, seconds: float) -> dict[str, Any]:
        """The runner's checkpoint: the algorithm's state, the log so far, the elapsed time."""
        state = {"algorithm": self.algorithm.state_dict(),
                 "log": [vars(row).copy() for row in self.log],
                 "rollbacks": list(self.rollbacks), "seconds": seconds}
        if self.stopper is not None:
            state["stopper"] = self.stopper.state_dict()
        return state

    def prepare(self) -> None:
        """Load the saved state to continue from (``control.resume``), once; the first
        iteration does it if no one did before (:func:`restore_together` does it for every
        problem before any steps, since a grouped step steps them all)."""
        if self.control.resume is not None and not self._resumed:
            self._resume(self.control.resume)
        self._resumed = True

    def _resume(self, state: dict[str, Any]) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        if self.stopper is not None and state.get("stopper") is not None:
            self.stopper.load_state_dict(state["stopper"], self.problem.y.device)
        self.log = [LogRow(**row) for row in state["log"]]
        self.rollbacks = list(state.get("rollbacks", []))
        self._offset = float(state["seconds"])

    def iterations(self, flag: SignalFlag) -> Generator[int, None, Result]:
        """The run, one iteration per ``next()`` (it yields the iteration's number), its
        :class:`Result` as the generator's return value; :func:`restore_together` interleaves
        several. Checkpoints and :class:`~deeprestore.control.Interrupted` /
        :class:`~deeprestore.control.OutOfTime` as :meth:`run`."""
        algorithm, control = self.algorithm, self.control
        stateful = algorithm.stateful
        self.prepare()
        start = time.perf_counter() - self._offset
        good = (algorithm.state_dict(), len(self.log)) if stateful else None
        stopper = self.stopper
        finished = algorithm.done() or (stopper is not None and stopper.done)
        while not finished:
            loss, gap = algorithm.update()
            it = algorithm.iteration
            output = algorithm.network_output() if stopper is not None else None
            if stopper is not None and output is not None:
                stopper.observe(it, output, algorithm.estimate)
            finished = algorithm.done() or (stopper is not None and stopper.done)
            if it % self.log_every == 0 or finished:
                with torch.no_grad():
                    psnr = self._measure()
                values = [loss, *(v for v in (psnr, gap) if v is not None)]
                numbers = torch.stack([v.float().reshape(()) for v in values]).tolist()
                loss_value = numbers.pop(0)
                psnr_value = numbers.pop(0) if psnr is not None else None
                gap_value = numbers.pop(0) if gap is not None else None
                seconds = time.perf_counter() - start
                if not all(math.isfinite(v) for v in (loss_value, gap_value or 0.0)):
                    if good is None or len(self.rollbacks) >= control.max_rollbacks:
                        tried = f" after {len(self.rollbacks)} rollbacks" if self.rollbacks else ""
                        raise FloatingPointError(
                            f"the loss became {loss_value} at iteration {it}{tried}")
                    algorithm.load_state_dict(good[0])
                    del self.log[good[1]:]
                    if stopper is not None:
                        stopper.forget_window()
                    finished = False
                    rate = algorithm.scale_learning_rate(0.5)
                    self.rollbacks.append({"at": it, "back_to": algorithm.iteration, "lr": rate})
                    yield it  # one update per step, in a group too
                    continue
                row = LogRow(it, loss_value, psnr_value, gap_value, seconds,
                             algorithm.denoiser_age(), *algorithm.weights(),
                             stop_signal=None if stopper is None else stopper.signal)
                self.log.append(row)
                if (stateful and control.max_rollbacks > 0 and good is not None
                        and it - good[0]["iteration"] >= control.snapshot_every):
                    good = (algorithm.state_dict(), len(self.log))
                if self.callback is not None:
                    self.callback(Progress(it, algorithm.total, loss_value, psnr_value, seconds))
            out_of_time = (stateful and not finished and control.deadline is not None
                           and control.clock() >= control.deadline)
            if stateful and control.checkpoint is not None:
                every = control.checkpoint_every
                if flag.signum is not None or out_of_time or (every and it % every == 0
                                                              and not finished):
                    control.checkpoint(self.state(time.perf_counter() - start))
            if flag.signum is not None:
                raise Interrupted(flag.signum)
            if out_of_time:
                raise OutOfTime()
            yield it
        estimate = algorithm.estimate()
        if stopper is not None and stopper.done and stopper.best_estimate is not None:
            estimate = stopper.best_estimate
        image = estimate.detach().float().clamp(0.0, 1.0).cpu()
        return Result(
            image=image,
            log=self.log,
            iterations=algorithm.iteration,
            seconds=time.perf_counter() - start,
            denoiser_calls=algorithm.denoiser_calls,
            denoiser=algorithm.denoiser_name,
            rollbacks=self.rollbacks,
            backtracks=algorithm.backtrack_events(),
            stop=None if stopper is None else stopper.report(algorithm.total),
        )


def restore(
    problem: Problem,
    settings: Settings,
    *,
    device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
    denoiser: Denoiser | None = None,
    baselines: dict[str, Callable[[Problem], torch.Tensor]] | None = None,
    control: RunControl | None = None,
    execution: Execution = DEFAULT_EXECUTION,
) -> Result:
    """Run ``settings.method`` on ``problem`` and return the restored image and its log.

    ``problem``'s tensors are moved to ``device``; ``callback`` receives a :class:`Progress`
    every ``settings.log_every`` iterations; ``denoiser`` overrides ``settings.denoiser``;
    ``baselines`` maps extra one-shot method names to functions of the problem; ``control``:
    checkpoints, resume and NaN rollback (:class:`~deeprestore.control.RunControl`);
    ``execution``: how the network steps run (:class:`~deeprestore.execution.Execution`).
    """
    settings.validate()
    device = torch.device(device)
    configure_backends(device, settings.precision)
    problem = problem_to_device(problem, device)
    algorithm = make_algorithm(problem, settings, device, denoiser, baselines, execution)
    stopper = (VarianceStop(settings.stop_window, settings.stop_patience)
               if settings.stop == "auto" and settings.method in NETWORK_METHODS else None)
    return Runner(algorithm, problem, settings.log_every, callback, control, stopper).run()


def _drive(steps: Generator[int, None, Result]) -> Result:
    """Run a :meth:`Runner.iterations` generator to its end; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def restore_together(
    problems: Sequence[Problem],
    settings: Sequence[Settings],
    *,
    device: torch.device | str = "cpu",
    callbacks: Sequence[ProgressCallback | None] | None = None,
    controls: Sequence[RunControl | None] | None = None,
    execution: Execution = DEFAULT_EXECUTION,
) -> list[Result | BaseException]:
    """Run several network problems at once, their Θ-steps grouped into one network
    (:mod:`deeprestore.grouping`); return each one's :class:`Result`, or the exception that
    ended it (a failure, :class:`~deeprestore.control.Interrupted`, OutOfTime), in order.

    Each problem keeps its own settings (method, seed, iterations, stop rule, rules of the
    reference code), z, Adam state, x, u, denoiser schedule, log, checkpoints and callback, and
    its result is its :func:`restore` result up to rounding. Problems must share
    :func:`~deeprestore.grouping.group_key` (network shape, size, precision); one that finishes
    first leaves the group. ``problems[i]``'s tensors are moved to ``device``.
    """
    count = len(problems)
    if len(settings) != count:
        raise ValueError("one Settings per problem")
    device = torch.device(device)
    callbacks = list(callbacks) if callbacks is not None else [None] * count
    controls = list(controls) if controls is not None else [None] * count
    runners: list[Runner] = []
    for problem, own, callback, control in zip(problems, settings, callbacks, controls,
                                               strict=True):
        own.validate()
        if own.method not in NETWORK_METHODS:
            raise ValueError(f"restore_together runs network methods, not {own.method!r}")
        configure_backends(device, own.precision)
        moved = problem_to_device(problem, device)
        algorithm = make_algorithm(moved, own, device, execution=execution)
        stopper = (VarianceStop(own.stop_window, own.stop_patience)
                   if own.stop == "auto" else None)
        runners.append(Runner(algorithm, moved, own.log_every, callback, control, stopper))
    members = [runner.algorithm for runner in runners]
    assert all(isinstance(member, NetworkAlgorithm) for member in members)
    ProblemGroup(members, execution)  # type: ignore[arg-type]
    results: dict[int, Result | BaseException] = {}
    try:
        for runner in runners:
            runner.prepare()
        with SignalFlag() as flag:
            active = {index: runner.iterations(flag) for index, runner in enumerate(runners)}
            while active:
                for index in list(active):
                    try:
                        next(active[index])
                        continue
                    except StopIteration as end:
                        results[index] = end.value
                    except (Exception, Interrupted, OutOfTime) as error:
                        results[index] = error
                    del active[index]
                    runners[index].algorithm.close()  # leaves the group
    finally:
        for runner in runners:
            runner.algorithm.close()
    return [results[index] for index in range(count)]


def problem_to_device(problem: Problem, device: torch.device) -> Problem:
    """The same problem with its tensors (float32) and operator on ``device``."""

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=torch.float32)

    operator = problem.operator
    if hasattr(operator, "to"):
        operator = operator.to(device)
    moved_y = move(problem.y)
    moved_x = move(problem.x_init)
    assert moved_y is not None and moved_x is not None
    return Problem(
        y=moved_y,
        operator=operator,
        x_init=moved_x,
        sigma=problem.sigma,
        reference=move(problem.reference),
        psnr=problem.psnr,
        extra=problem.extra,
    )
