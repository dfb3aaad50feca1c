"""The fresh noise added to the network input z every step, drawn where the run is.

DIP perturbs its input each step: ``z + σ_z · n`` with ``n ~ N(0, 1)`` of z's shape. Each run
draws from its own generator on its own device: on a CPU the run's CPU generator (seeded by the
run's seed, continuing after z's own draw: CPU outputs stay what they were), on a GPU a
generator of that device seeded with the run's seed, drawn on the device with no host work in
the step (issue 42: the earlier rule, the same numbers on every device, drew on the host and
cost milliseconds a step). A seed therefore gives other perturbations on a GPU than on a CPU;
a checkpoint holds its generator's state and the device type it belongs to, and continues only
on that device type (:meth:`PerturbationStream.set_state` refuses the other in one line).
"""

from __future__ import annotations

from typing import Any

import torch


class PerturbationStream:
    """Standard normal tensors of ``shape`` (N, C, H, W) on ``device``.

    On a CPU the i-th tensor is the i-th ``torch.randn(shape, generator=generator)`` of the CPU
    ``generator`` given; elsewhere the draws come from a generator of ``device`` seeded with
    ``seed``, written into one buffer (:meth:`next` returns the same tensor each time, refilled:
    a captured CUDA graph reads it in place).
    """

    def __init__(self, generator: torch.Generator, shape: torch.Size | tuple[int, ...],
                 dtype: torch.dtype, device: torch.device, seed: int = 0) -> None:
        if generator.device.type != "cpu":
            raise ValueError("a PerturbationStream continues a CPU generator on the CPU")
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = device
        self.generator = generator
        self._buffer: torch.Tensor | None = None
        #: the device type whose generator draws: the run's, or "cpu" (on a CPU, and on a
        #: device type without generators, such as the tests' ``meta``: drawn there and moved)
        self.kind = "cpu"
        if device.type != "cpu":
            try:
                own = torch.Generator(device=device)
            except RuntimeError:
                return
            own.manual_seed(seed)
            self.generator, self.kind = own, device.type
            self._buffer = torch.empty(self.shape, dtype=dtype, device=device)

    def next(self) -> torch.Tensor:
        """The next N(0, 1) tensor, on the stream's device."""
        if self._buffer is None:
            noise = torch.randn(self.shape, generator=self.generator, dtype=self.dtype)
            return noise if self.device.type == "cpu" else noise.to(self.device)
        return self._buffer.normal_(generator=self.generator)

    def get_state(self) -> dict[str, Any]:
        """The generator's state after the tensors taken so far, with its device type."""
        return {"device_type": self.kind, "state": self.generator.get_state()}

    def set_state(self, saved: dict[str, Any] | torch.Tensor) -> None:
        """Continue from ``saved`` (:meth:`get_state` of a run on the same device type; a bare
        tensor is a CPU generator's state, as checkpoints held before issue 42).

        Raises ValueError (one line) for a state of another device type's generator."""
        if isinstance(saved, torch.Tensor):
            saved = {"device_type": "cpu", "state": saved}
        made_on = str(saved.get("device_type"))
        if made_on != self.kind:
            raise ValueError(
                f"its perturbation stream was drawn on a {made_on} device and this run is on "
                f"{self.kind}: continue it with --device {made_on}, or start over "
                "with --overwrite")
        state = saved["state"].cpu()
        expected = self.generator.get_state().numel()
        if state.numel() != expected:
            raise ValueError(f"the saved perturbation generator state has {state.numel()} bytes, "
                             f"not the {expected} of a {self.kind} generator")
        self.generator.set_state(state)

    def close(self) -> None:
        """Nothing to release (kept for the callers' symmetry)."""
