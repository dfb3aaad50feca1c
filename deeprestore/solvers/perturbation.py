"""The fresh noise added to the network input z every step, the same numbers on every device.

DIP perturbs its input each step: ``z + σ_z · n`` with ``n ~ N(0, 1)`` of z's shape. The draws
come from one CPU generator per run (seeded by the run's seed, continuing after z's own draw),
whatever device the run is on, so a seed gives the same perturbations on a CPU and on a GPU
(CUDA's generator is another algorithm: it would give other numbers, and a state that a CPU
run cannot load). On a GPU the next draw is made on a background thread while the current
step runs, into pinned memory, and copied without blocking the host.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

#: draws for GPU runs are made here, one after the other (cheap next to a step; in order)
_DRAWS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perturbation")


class PerturbationStream:
    """Standard normal tensors of ``shape`` (N, C, H, W) on ``device``, drawn from the CPU
    ``generator``: the i-th tensor is the i-th ``torch.randn(shape, generator=generator)``
    whatever the device.

    ``prefetch`` (default: on any device but the CPU) draws the next tensor in the background
    as soon as one is taken. :meth:`get_state` is the generator's state after the tensors taken
    so far (a prefetched one not counted), so a checkpoint resumes the same sequence anywhere.
    """

    def __init__(self, generator: torch.Generator, shape: torch.Size | tuple[int, ...],
                 dtype: torch.dtype, device: torch.device, prefetch: bool | None = None
                 ) -> None:
        if generator.device.type != "cpu":
            raise ValueError("a PerturbationStream draws from a CPU generator")
        self.generator = generator
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = device
        self.prefetch = device.type != "cpu" if prefetch is None else prefetch
        self._pending: Future[torch.Tensor] | None = None
        self._state_before_pending: torch.Tensor | None = None

    def _draw(self) -> torch.Tensor:
        noise = torch.randn(self.shape, generator=self.generator, dtype=self.dtype)
        return noise.pin_memory() if self.device.type == "cuda" else noise

    def next(self) -> torch.Tensor:
        """The next N(0, 1) tensor, on the stream's device."""
        if self._pending is not None:
            noise = self._pending.result()
            self._pending = None
            self._state_before_pending = None
        else:
            noise = self._draw()
        if self.prefetch:
            self._state_before_pending = self.generator.get_state()
            self._pending = _DRAWS.submit(self._draw)
        if self.device.type == "cpu":
            return noise
        return noise.to(self.device, non_blocking=True)

    def _settle(self) -> None:
        """Wait for a draw in flight and put the generator back to before it."""
        if self._pending is not None:
            self._pending.result()
            assert self._state_before_pending is not None
            self.generator.set_state(self._state_before_pending)
            self._pending = None
            self._state_before_pending = None

    def get_state(self) -> torch.Tensor:
        """The CPU generator's state after the tensors taken so far (a ByteTensor)."""
        if self._state_before_pending is not None:
            return self._state_before_pending.clone()
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        """Continue from ``state`` (:meth:`get_state` of this or another run, any device).

        Raises ValueError (one line) for a state that is not a CPU generator's (an older
        checkpoint of a CUDA run may hold CUDA's generator state)."""
        self._settle()
        state = state.cpu()
        expected = self.generator.get_state().numel()
        if state.numel() != expected:
            raise ValueError(f"the saved perturbation generator state has {state.numel()} bytes, "
                             f"not the {expected} of a CPU generator (made by another device "
                             "type's generator)")
        self.generator.set_state(state)

    def rewind(self) -> None:
        """Forget a prefetched draw (the generator goes back to before it)."""
        self._settle()

    def close(self) -> None:
        """Wait for a draw in flight (it keeps the generator busy otherwise)."""
        if self._pending is not None:
            self._pending.result()
