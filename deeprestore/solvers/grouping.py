"""Many problems per step: the Θ-steps of several network runs as one grouped network.

A :class:`ProblemGroup` holds the networks of every run of its *members* — network algorithms
(:class:`GroupMember`: what :class:`~deeprestore.solvers.network.NetworkAlgorithm` exposes to a
group; this module does not import it), each with its own problem, settings, runs,
z, seeds, x, u and denoiser schedule — as one :class:`~deeprestore.models.batched.BatchedSkipNet`
(grouped convolutions, runs stacked on the channel axis, run-major) and steps them with one
Adam over all of its parameters. The members' networks must have one shape (z's channels and
size, the width of the network, the image's channels) and one precision.

One step: every member's perturbed z goes through the grouped network in one forward pass; each
member computes its own loss on its slice of the output; the sum is differentiated once, so run
r's gradient is ∂loss_r/∂Θ_r; the members' rules (DIP's backtracking) decide per run whether
its step is kept; Adam then steps every kept run with its own learning rate and its own step
count (Adam is elementwise, so this is each run's own Adam step, up to rounding). A run whose
step is not kept keeps its moments and its step count, as when its own Adam is not called.

The step is computed when the first member asks for its Θ-steps in an iteration
(:meth:`ProblemGroup.steps_for`); the others find theirs waiting. Nothing of a member's
Θ-step depends on what it does earlier in the same iteration (the denoiser refresh changes
f(x), not x or u), so a member stepped this way does exactly what it would do alone.

The runs' own networks and optimisers stay the format of checkpoints: :meth:`write_back` copies
one member's parameters, buffers, Adam moments, step counts and learning rate into them and
:meth:`read_back` the other way, so a member saved in a group resumes alone and vice versa.
A member that finishes :meth:`leave` s; the group is rebuilt from the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from deeprestore.config.settings import Settings
from deeprestore.execution import Execution, channels_last
from deeprestore.models.batched import BatchedSkipNet
from deeprestore.solvers.base import Problem


class GroupedRun(Protocol):
    """One run of a member, as a group uses it: its own network, input z, Adam and the
    stream of z's perturbations."""

    net: torch.nn.Module
    z: torch.Tensor
    optimizer: torch.optim.Optimizer
    perturbation: Any


class GroupMember(Protocol):
    """What a network algorithm exposes to a :class:`ProblemGroup`: its problem, settings,
    device, iteration and runs; joining and leaving a group; the pieces of a Θ-step a group computes
    for it — the perturbed input of a run, the forward and backward passes in the member's
    precision, the runs' losses of a slice of the group's output, and the steps (with the
    member's own rules) from those losses."""

    problem: Problem
    settings: Settings
    device: torch.device
    iteration: int
    runs: Sequence[Any]  # GroupedRun

    @property
    def group(self) -> ProblemGroup | None: ...

    def join(self, group: ProblemGroup | None) -> None: ...

    def perturbed_input(self, run: Any) -> torch.Tensor: ...

    def forward_in_precision(self, forward: Callable[[torch.Tensor], torch.Tensor],
                             z: torch.Tensor) -> torch.Tensor: ...

    def backward_in_precision(self, loss: torch.Tensor) -> None: ...

    def piece_losses(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def piece_steps(self, out: torch.Tensor, losses: torch.Tensor, data_mse: torch.Tensor,
                    iteration: int, params: list[list[torch.Tensor]]) -> list[Any]: ...


def network_key(settings: Settings, channels: int, size: tuple[int, int]) -> tuple[Any, ...]:
    """What runs of ``settings`` on images of ``channels`` and (height, width) ``size`` must
    share to be stepped as one network: its shape, the image size, precision, compilation."""
    s = settings
    return (s.input_channels, channels, s.net_channels, s.skip_channels, s.upsample, size,
            s.precision, s.compile)


def group_key(algorithm: GroupMember) -> tuple[Any, ...]:
    """What problems must share to be stepped together: network shape, size, precision, device."""
    problem = algorithm.problem
    return (*network_key(algorithm.settings, problem.channels, problem.size),
            str(algorithm.device))


class ProblemGroup:
    """The runs of ``members`` (network algorithms of one :func:`group_key`) as one network."""

    def __init__(self, members: Sequence[GroupMember], execution: Execution,
                 notice: Callable[[str], None] | None = None) -> None:
        if not members:
            raise ValueError("a ProblemGroup needs at least one member")
        keys = {group_key(member) for member in members}
        if len(keys) > 1:
            raise ValueError("a ProblemGroup's members need one network shape, size, precision "
                             "and device")
        self.execution = execution
        self.notice = notice  # told when the group is split after running out of memory
        self.device = members[0].device
        self.members: list[GroupMember] = []
        self._waiting: dict[int, list[Any]] = {}
        self._build(list(members))
        for member in members:
            member.join(self)

    # -- layout ---------------------------------------------------------------------------------

    def _build(self, members: list[GroupMember]) -> None:
        """A fresh grouped network over ``members``' runs, from their own nets and optimisers."""
        self.members = members
        self.runs: list[Any] = [run for member in members for run in member.runs]
        self._offsets: dict[int, int] = {}
        offset = 0
        for member in members:
            self._offsets[id(member)] = offset
            offset += len(member.runs)
        if not self.runs:
            return
        net = BatchedSkipNet.from_nets([run.net for run in self.runs])
        if channels_last(self.device, members[0].settings.precision, self.execution):
            net = net.to(memory_format=torch.channels_last)  # the runs' own layout
        self.net = net
        self.forward: Callable[[torch.Tensor], torch.Tensor] = net
        if members[0].settings.compile:
            self.forward = torch.compile(net)  # type: ignore[assignment]
        named = dict(net.named_parameters())
        self.names = [name for name, _ in self.runs[0].net.named_parameters()]
        self.params = [named[name] for name in self.names]
        self.buffers = dict(net.named_buffers())
        #: Adam's constants: the runs' own optimisers' (torch.optim.Adam's defaults)
        adam = self.runs[0].optimizer.defaults
        self.betas: tuple[float, float] = adam["betas"]
        self.eps: float = adam["eps"]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        count = len(self.runs)
        self.steps = torch.zeros(count, dtype=torch.float64, device=self.device)
        self.lr = torch.zeros(count, dtype=torch.float64, device=self.device)
        for member in members:
            self.read_back(member)

    def _indices(self, member: GroupMember) -> range:
        start = self._offsets[id(member)]
        return range(start, start + len(member.runs))

    def _chunk(self, tensor: torch.Tensor, index: int) -> torch.Tensor:
        return tensor.chunk(len(self.runs))[index]

    def run_parameters(self, index: int) -> list[torch.Tensor]:
        """Views of run ``index``'s parameters in the grouped network (its own nets' order)."""
        return [self._chunk(param, index) for param in self.params]

    # -- state ----------------------------------------------------------------------------------

    @torch.no_grad()
    def write_back(self, member: GroupMember) -> None:
        """Give ``member``'s runs' nets and optimisers the group's state for them."""
        indices = self._indices(member)
        self.net.copy_into([run.net for run in member.runs], first=indices.start)
        for index, run in zip(indices, member.runs, strict=True):
            own = dict(run.net.named_parameters())
            optimizer = run.optimizer
            for param_group in optimizer.param_groups:
                param_group["lr"] = float(self.lr[index])
            steps = float(self.steps[index])
            for k, name in enumerate(self.names):
                if steps == 0:
                    optimizer.state.pop(own[name], None)
                    continue
                optimizer.state[own[name]] = {
                    "step": torch.tensor(steps, dtype=torch.float32),
                    "exp_avg": torch.empty_like(own[name]).copy_(
                        self._chunk(self.exp_avg[k], index)),
                    "exp_avg_sq": torch.empty_like(own[name]).copy_(
                        self._chunk(self.exp_avg_sq[k], index)),
                }

    @torch.no_grad()
    def read_back(self, member: GroupMember) -> None:
        """Take ``member``'s runs' nets and optimisers (fresh or just loaded) as the group's
        state for them."""
        indices = self._indices(member)
        self.net.copy_from([run.net for run in member.runs], first=indices.start)
        for index, run in zip(indices, member.runs, strict=True):
            own = dict(run.net.named_parameters())
            optimizer = run.optimizer
            self.lr[index] = optimizer.param_groups[0]["lr"]
            states = [optimizer.state.get(own[name]) for name in self.names]
            self.steps[index] = float(states[0]["step"]) if states[0] else 0.0
            for k, state in enumerate(states):
                if state:
                    self._chunk(self.exp_avg[k], index).copy_(state["exp_avg"])
                    self._chunk(self.exp_avg_sq[k], index).copy_(state["exp_avg_sq"])
                else:
                    self._chunk(self.exp_avg[k], index).zero_()
                    self._chunk(self.exp_avg_sq[k], index).zero_()

    def scale_learning_rate(self, member: GroupMember, factor: float) -> float:
        """Multiply ``member``'s runs' learning rates by ``factor``; return the new one."""
        indices = self._indices(member)
        self.lr[indices.start:indices.stop] *= factor
        for run in member.runs:
            for param_group in run.optimizer.param_groups:
                param_group["lr"] *= factor
        return float(self.lr[indices.start])

    def leave(self, member: GroupMember) -> None:
        """``member`` is done: its state goes back to its runs, the others regroup."""
        if member not in self.members:
            return
        others = [other for other in self.members if other is not member]
        for other in self.members:
            self.write_back(other)
        self._waiting.pop(id(member), None)
        member.join(None)
        self._build(others)

    # -- the step -------------------------------------------------------------------------------

    def steps_for(self, member: GroupMember) -> list[Any]:
        """``member``'s Θ-steps of this iteration (a
        :class:`~deeprestore.solvers.network_run.ThetaStep` per run), computing every member's
        when ``member``'s is not waiting yet.

        When the grouped step runs out of device memory, the group is split in two halves (the
        second a new group) and the step is taken again in ``member``'s half, as if the
        failed attempt had not happened (the perturbation draws and BatchNorm statistics are
        put back); a group of one member cannot be split and raises
        ``torch.OutOfMemoryError``."""
        if id(member) not in self._waiting:
            try:
                self._step_all(caller=member)
            except torch.OutOfMemoryError:
                if len(self.members) < 2:
                    raise
                out_of_memory = True  # split outside the handler: its traceback holds the
            else:  # failed step's activations, which the smaller groups need freed
                out_of_memory = False
            if out_of_memory:
                self._split()
                group = member.group
                assert group is not None
                return group.steps_for(member)
        return self._waiting.pop(id(member))

    def _split(self) -> None:
        """Halve the group after running out of memory: the first half stays in this group,
        the second becomes a new one (their state moves through the runs' own networks)."""
        members = self.members
        for member in members:
            self.write_back(member)
            self._waiting.pop(id(member), None)
        self._release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(members) // 2
        if self.notice is not None:
            self.notice(f"out of memory with {len(members)} problems per step: continuing as "
                        f"groups of {half} and {len(members) - half}")
        self._build(members[:half])
        ProblemGroup(members[half:], self.execution, self.notice)

    def _release(self) -> None:
        """Drop the grouped network and its Adam moments (before a smaller one is built)."""
        self.net = None  # type: ignore[assignment]
        self.forward = None  # type: ignore[assignment]
        self.params, self.buffers, self.exp_avg, self.exp_avg_sq = [], {}, [], []

    def _step_all(self, caller: GroupMember) -> None:
        if self._waiting:
            raise RuntimeError("the members of a ProblemGroup must step in turn: one has not "
                               "taken its last step yet")
        draws = [run.perturbation.get_state() for run in self.runs]
        statistics = {name: buffer.clone() for name, buffer in self.buffers.items()}
        try:
            self._step_all_once(caller)
        except torch.OutOfMemoryError:
            for param in self.params:
                param.grad = None
            self._waiting.clear()
            for run, state in zip(self.runs, draws, strict=True):
                run.perturbation.set_state(state)
            for name, buffer in self.buffers.items():
                buffer.copy_(statistics[name])
            raise

    def _step_all_once(self, caller: GroupMember) -> None:
        for param in self.params:
            param.grad = None
        first = self.members[0]
        inputs = torch.cat([member.perturbed_input(run)
                            for member in self.members for run in member.runs])
        out = first.forward_in_precision(self.forward, inputs)
        pieces = out.split([len(member.runs) for member in self.members])
        results = [member.piece_losses(piece) for member, piece in zip(self.members, pieces,
                                                                         strict=True)]
        first.backward_in_precision(torch.stack([losses.sum() for losses, _ in results]).sum())
        kept: list[bool] = []
        for member, piece, (losses, data_mse) in zip(self.members, pieces, results, strict=True):
            iteration = member.iteration + (0 if member is caller else 1)
            steps = member.piece_steps(piece, losses, data_mse, iteration,
                                        [self.run_parameters(i) for i in self._indices(member)])
            kept.extend(step.kept for step in steps)
            self._waiting[id(member)] = steps
        self._adam(kept)

    @torch.no_grad()
    def _adam(self, kept: list[bool]) -> None:
        """One Adam step of every kept run, each with its own learning rate and step count
        (torch.optim.Adam's update with the runs' betas and eps)."""
        (beta1, beta2), eps = self.betas, self.eps
        keep = torch.tensor(kept, device=self.device)
        self.steps += keep
        started = self.steps > 0
        bias1 = torch.where(started, 1 - beta1 ** self.steps, 1.0)
        bias2_sqrt = torch.where(started, 1 - beta2 ** self.steps, 1.0).sqrt()
        step_size = torch.where(keep, self.lr / bias1, 0.0)
        count = len(self.runs)
        decay1 = torch.where(keep, beta1, 1.0)
        decay2 = torch.where(keep, beta2, 1.0)
        for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq,
                                              strict=True):
            if param.grad is None:
                continue
            shape = (count,) + (1,) * param.dim()
            dtype = param.dtype

            def per_run(values: torch.Tensor, shape: tuple[int, ...] = shape,
                        dtype: torch.dtype = dtype) -> torch.Tensor:
                return values.to(dtype).reshape(shape)

            grad = param.grad.unflatten(0, (count, -1))
            m, v = exp_avg.unflatten(0, (count, -1)), exp_avg_sq.unflatten(0, (count, -1))
            m.mul_(per_run(decay1)).add_(grad * per_run(1 - decay1))
            v.mul_(per_run(decay2)).addcmul_(grad, grad * per_run(1 - decay2))
            denom = (v.sqrt() / per_run(bias2_sqrt)).add_(eps)
            param.unflatten(0, (count, -1)).sub_(per_run(step_size) * m / denom)
