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
from deeprestore.solvers.adam import adam_kernel
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
    for it — the perturbed input of a run, the forward pass and the gradient in the member's
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

    def gradient_in_precision(self, loss: torch.Tensor,
                              params: list[torch.Tensor]) -> list[torch.Tensor]: ...

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
        count = len(self.runs)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        #: each run's Θ and Adam moments as views of the grouped tensors, made once
        self.views = [list(views) for views in zip(
            *(tensor.chunk(count) for tensor in (*self.params, *self.exp_avg,
                                                 *self.exp_avg_sq)), strict=True)]
        #: each run's Adam step count (one tensor where torch's Adam keeps its own)
        self.steps = [torch.zeros((), dtype=torch.float32, device=_step_device(run.optimizer))
                      for run in self.runs]
        for member in members:
            self.read_back(member)

    def _indices(self, member: GroupMember) -> range:
        start = self._offsets[id(member)]
        return range(start, start + len(member.runs))

    def run_parameters(self, index: int) -> list[torch.Tensor]:
        """Views of run ``index``'s parameters in the grouped network (its own nets' order)."""
        return self.views[index][:len(self.params)]

    def _run_moments(self, index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Views of run ``index``'s Adam moments (first, second) in the group's tensors."""
        views, count = self.views[index], len(self.params)
        return views[count:2 * count], views[2 * count:]

    # -- state ----------------------------------------------------------------------------------

    @torch.no_grad()
    def write_back(self, member: GroupMember) -> None:
        """Give ``member``'s runs' nets and optimisers the group's state for them (one read
        of the step counts: at checkpoints and when the group changes)."""
        indices = self._indices(member)
        self.net.copy_into([run.net for run in member.runs], first=indices.start)
        for index, run in zip(indices, member.runs, strict=True):
            moments, squares = self._run_moments(index)
            optimizer = run.optimizer
            named = dict(run.net.named_parameters())
            own = [named[name] for name in self.names]
            for param, moment, square in zip(own, moments, squares, strict=True):
                state = optimizer.state[param]
                state["step"] = self.steps[index].to(state["step"].device, copy=True)
                state["exp_avg"] = torch.empty_like(param).copy_(moment)
                state["exp_avg_sq"] = torch.empty_like(param).copy_(square)

    @torch.no_grad()
    def read_back(self, member: GroupMember) -> None:
        """Take ``member``'s runs' nets and optimisers (fresh or just loaded) as the group's
        state for them."""
        indices = self._indices(member)
        self.net.copy_from([run.net for run in member.runs], first=indices.start)
        for index, run in zip(indices, member.runs, strict=True):
            moments, squares = self._run_moments(index)
            optimizer = run.optimizer
            named = dict(run.net.named_parameters())
            own = [named[name] for name in self.names]
            states = [optimizer.state.get(param) for param in own]
            if states[0]:
                self.steps[index].copy_(states[0]["step"])
            else:
                self.steps[index].zero_()
            for state, moment, square in zip(states, moments, squares, strict=True):
                if state:
                    moment.copy_(state["exp_avg"])
                    square.copy_(state["exp_avg_sq"])
                else:
                    moment.zero_()
                    square.zero_()

    def scale_learning_rate(self, member: GroupMember, factor: float) -> float:
        """Multiply ``member``'s runs' learning rates by ``factor``; return the new one (the
        runs' own optimisers hold the rates the group steps with)."""
        for run in member.runs:
            for param_group in run.optimizer.param_groups:
                param_group["lr"] *= factor
        return float(member.runs[0].optimizer.param_groups[0]["lr"])

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
        failed attempt had not happened (the perturbation draws are put back; BatchNorm's
        running statistics, which a network in training mode never reads, may have moved); a
        group of one member cannot be split and raises ``torch.OutOfMemoryError``."""
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
        try:
            self._step_all_once(caller)
        except torch.OutOfMemoryError:
            self._waiting.clear()
            for run, state in zip(self.runs, draws, strict=True):
                run.perturbation.set_state(state)
            raise

    def _step_all_once(self, caller: GroupMember) -> None:
        first = self.members[0]
        inputs = torch.cat([member.perturbed_input(run)
                            for member in self.members for run in member.runs])
        out = first.forward_in_precision(self.forward, inputs)
        pieces = out.split([len(member.runs) for member in self.members])
        results = [member.piece_losses(piece) for member, piece in zip(self.members, pieces,
                                                                         strict=True)]
        total = torch.stack([losses.sum() for losses, _ in results]).sum()
        grads = [grad.chunk(len(self.runs))
                 for grad in first.gradient_in_precision(total, self.params)]
        skips: list[torch.Tensor | None] = []
        for member, piece, (losses, data_mse) in zip(self.members, pieces, results, strict=True):
            iteration = member.iteration + (0 if member is caller else 1)
            steps = member.piece_steps(piece, losses, data_mse, iteration,
                                        [self.run_parameters(i) for i in self._indices(member)])
            skips.extend(None if step.kept is None else ~step.kept for step in steps)
            self._waiting[id(member)] = steps
        self._adam(skips, grads)

    @torch.no_grad()
    def _adam(self, skips: list[torch.Tensor | None],
              grads: list[tuple[torch.Tensor, ...]]) -> None:
        """One Adam step of every run: torch's fused kernel over the run's views, with the
        run's own learning rate and step count; ``skips[r]``, a bool tensor (or None), leaves
        run r as it is where True (a backtracked step)."""
        for index, (run, skip) in enumerate(zip(self.runs, skips, strict=True)):
            moments, squares = self._run_moments(index)
            run_grads = [grad[index] for grad in grads]
            adam_kernel(run.optimizer.param_groups[0], self.run_parameters(index), run_grads,
                        moments, squares, [self.steps[index]], skip)


def _step_device(optimizer: torch.optim.Optimizer) -> torch.device:
    """Where ``optimizer`` (a torch Adam) keeps its step counts: with its parameters when
    fused or capturable, else on the CPU."""
    group = optimizer.param_groups[0]
    if group.get("fused") or group.get("capturable"):
        return group["params"][0].device
    return torch.device("cpu")
