"""N independent DIP "skip" networks computed in one forward pass (grouped convolutions).

The N runs are stacked along the channel dimension: a per-run tensor of layout (1, C, H, W) becomes
one tensor of layout (1, N*C, H, W) whose channels are run-major (run 0's C channels, then run 1's,
…). Every convolution has ``groups=N``, so run r's output channels only see run r's input channels;
BatchNorm normalises each channel on its own, so over N*C channels it is per-run automatically
(statistics, affine parameters and running statistics alike); LeakyReLU, sigmoid, reflection
padding and interpolation act per channel. The only operation that mixes channel blocks is the
skip concatenation, done as (1, N, c, H, W) ⊕ (1, N, c', H, W) on dim 2 → (1, N*(c+c'), H, W).

It is built from SkipNet's own blocks (:class:`~deeprestore.models.skip.Scale` and ``conv`` with
``runs`` groups), so its module tree is SkipNet's name for name, and every parameter
and buffer of the batched net is the dim-0 concatenation of the N nets' tensors (a grouped conv
weight (N*c_out, c_in, k, k) is N weights (c_out, c_in, k, k) stacked), so
:meth:`BatchedSkipNet.copy_from` and :meth:`BatchedSkipNet.copy_into` are plain copies.

With one Adam optimiser over the batched parameters and loss = Σ_r loss_r, run r's gradient is
∂loss_r/∂Θ_r, and Adam is elementwise, so a step equals N separate Adam steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deeprestore.models.skip import SkipNet, pad_to_multiple, skip_layers


class BatchedSkipNet(nn.Module):
    """``runs`` independent :class:`~deeprestore.models.skip.SkipNet` s evaluated in one pass.

    Input ``z``: (runs, in_channels, H, W) — run r's input is ``z[r]`` (what a SkipNet would get as
    ``z[r:r+1]``). Output: (runs, out_channels, H, W), row r equal to SkipNet r's output. Padding
    and cropping are SkipNet's (reflection to a multiple of 2**scales, at least 2 * that).

    Internally the runs live on the channel dim, (1, runs*C, H, W); see the module docstring.
    Each run's parameters are initialised with the same distribution as a fresh SkipNet's.
    """

    def __init__(self, runs: int, *args: Any, **kwargs: Any) -> None:
        """``runs`` networks, each built as ``SkipNet(*args, **kwargs)`` would be (in_channels,
        out_channels, channels, skip_channels, scales, upsample_mode: one definition of the
        architecture and its defaults, SkipNet's)."""
        super().__init__()
        if runs < 1:
            raise ValueError(f"runs must be ≥ 1, got {runs}")
        bound = inspect.signature(SkipNet).bind(*args, **kwargs)
        bound.apply_defaults()
        self.architecture: dict[str, Any] = dict(bound.arguments)
        self.runs = runs
        self.in_channels = self.architecture["in_channels"]
        self.out_channels = self.architecture["out_channels"]
        self.multiple = 2 ** self.architecture["scales"]
        self.body, self.head = skip_layers(**self.architecture, runs=runs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(runs, in_channels, H, W) → (runs, out_channels, H, W), values in (0, 1)."""
        if z.dim() != 4 or z.shape[0] != self.runs or z.shape[1] != self.in_channels:
            raise ValueError(
                f"expected z of shape ({self.runs}, {self.in_channels}, H, W), got {tuple(z.shape)}"
            )
        height, width = z.shape[-2:]
        x = z.reshape(1, self.runs * self.in_channels, height, width)
        padded = pad_to_multiple(x, self.multiple, minimum=2 * self.multiple)
        out = self.head(self.body(padded))[..., :height, :width]
        return out.reshape(self.runs, self.out_channels, height, width)

    @classmethod
    def from_nets(cls, nets: list[SkipNet]) -> BatchedSkipNet:
        """A BatchedSkipNet whose run r has exactly the parameters and buffers of ``nets[r]``.

        The nets must share one architecture; the result is on ``nets[0]``'s device and dtype and
        in its training mode.
        """
        if not nets:
            raise ValueError("from_nets needs at least one SkipNet")
        first = nets[0]
        states = [net.state_dict() for net in nets]
        shapes = {name: t.shape for name, t in states[0].items()}
        for net, state in zip(nets, states, strict=True):
            same_shapes = {name: t.shape for name, t in state.items()} == shapes
            if not same_shapes or net.architecture != first.architecture:
                raise ValueError("from_nets needs SkipNets of one architecture")
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten: keep the RNG
            batched = cls(len(nets), **first.architecture)
        ref = next(first.parameters())
        batched = batched.to(device=ref.device, dtype=ref.dtype)
        batched.train(first.training)
        batched.copy_from(nets)
        return batched

    @torch.no_grad()
    def copy_into(self, nets: Sequence[nn.Module], first: int = 0) -> None:
        """Write the parameters and buffers of runs ``first``, ``first + 1``, … into ``nets``
        (SkipNets of this architecture, in run order)."""
        state = self.state_dict()
        for r, net in enumerate(nets, start=first):
            for name, tensor in net.state_dict(keep_vars=True).items():
                tensor.copy_(state[name].chunk(self.runs)[r])

    @torch.no_grad()
    def copy_from(self, nets: Sequence[nn.Module], first: int = 0) -> None:
        """Make the parameters and buffers of runs ``first``, ``first + 1``, … those of ``nets``
        (undoes :meth:`copy_into`)."""
        state = self.state_dict(keep_vars=True)
        for r, net in enumerate(nets, start=first):
            for name, tensor in net.state_dict().items():
                state[name].chunk(self.runs)[r].copy_(tensor)
