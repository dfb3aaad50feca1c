"""One run's step as a captured CUDA graph: launched by one call instead of hundreds.

:class:`CapturedStep` runs a step function eagerly for a few warm-up calls (on a side stream,
as CUDA graphs require; cuDNN's autotuning happens there), then captures its next call as a
``torch.cuda.CUDAGraph`` and replays it from then on. The function must be a pure device
program over tensors that keep their storage — the run's parameters, Adam state, x, u, f(x),
EMA, last output, the rules' tensors and the perturbation buffer, all updated in place
(:class:`~deeprestore.solvers.network_run.NetworkRun`) — and must read nothing back to the host;
what it returns are the graph's own output tensors, overwritten by the next replay (callers
copy what they keep). A capture that fails is reported once and the step stays eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch

OutputT = TypeVar("OutputT")

#: eager calls before the capture (the first builds state lazily; then cuDNN autotunes)
WARMUP_CALLS = 3


class CapturedStep(Generic[OutputT]):
    """``step()`` eager ``warmup`` times, then captured once and replayed (CUDA only)."""

    def __init__(self, step: Callable[[], OutputT], device: torch.device,
                 warmup: int = WARMUP_CALLS,
                 notice: Callable[[str], None] | None = None) -> None:
        if device.type != "cuda":
            raise ValueError(f"a captured step needs a CUDA device, not {device}")
        self.step = step
        self.device = device
        self.warmup = warmup
        self.notice = notice
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: OutputT | None = None
        self.failed: str | None = None
        self._side = torch.cuda.Stream(device=device)

    def __call__(self) -> OutputT:
        self.calls += 1
        if self.failed is not None:
            return self.step()
        if self.graph is None and self.calls <= self.warmup:
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                outputs = self.step()
            torch.cuda.current_stream(self.device).wait_stream(self._side)
            return outputs
        if self.graph is None:
            self._capture()
            if self.graph is None:  # the capture failed: this call runs eagerly
                return self.step()
        assert self.outputs is not None
        self.graph.replay()
        return self.outputs

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = self.step()
        except RuntimeError as err:  # e.g. an op that syncs with the host inside the step
            self.failed = str(err).splitlines()[0] if str(err) else type(err).__name__
            if self.notice is not None:
                self.notice(f"note: the step could not be captured as a CUDA graph "
                            f"({self.failed}); it runs eagerly")
            return
        self.graph, self.outputs = graph, outputs
