"""Automatic stopping without a reference: the windowed moving variance of the network outputs.

DIP-type methods first fit the image, then the noise. Wang et al. ("Early Stopping for Deep
Image Prior", ES-WMV) observed that the variance of the last W network outputs T_Θ(z) falls
while the image is being fitted and rises again when the noise is: its minimum sits close to
the PSNR peak. :class:`VarianceStop` tracks that variance every iteration and declares the run
done when it has not reached a new minimum for ``patience`` iterations; the estimate to return
is the one at the minimum. Nothing here needs the clean image, and nothing knows about networks
or tasks: it sees tensors (1, C, H, W) on any device.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch

#: the dtype the window's outputs are kept in
STORAGE = torch.float16


def window_bytes(window: int, output_elements: int) -> int:
    """Bytes the window of ``window`` outputs of ``output_elements`` values holds, plus the
    float64 running sum."""
    return (window * torch.finfo(STORAGE).bits // 8 + 8) * output_elements


class VarianceStop:
    """ES-WMV: stop when the moving variance of the outputs has not improved for a while.

    Parameters
    ----------
    window : int
        W, how many of the latest outputs the variance is taken over.
    patience : int
        P, iterations without a new minimum of the variance before the run is done.

    The signal at iteration t is ``mean over the window of mean((x_i − x̄)²)``, per pixel, on the
    [0, 1] scale of the outputs (None until W outputs have been seen). The window keeps the
    outputs in float16 (:data:`STORAGE`; half the memory: W = 200 outputs of a 256² RGB image
    are 79 MB), and the running sums in float64 take those same rounded values, so adding and
    removing an output is exact and the signal does not drift; float16's rounding (≤ 2⁻¹² on
    [0, 1]) moves a variance of ~1e-4 by well under 1 %.
    """

    def __init__(self, window: int, patience: int) -> None:
        if window < 2 or patience < 1:
            raise ValueError(f"window must be ≥ 2 and patience ≥ 1, got {window}, {patience}")
        self.window = window
        self.patience = patience
        self._outputs: deque[torch.Tensor] = deque()
        self._sum: torch.Tensor | None = None  # Σ x_i over the window (float64)
        self._sum_squares = 0.0  # Σ ‖x_i‖² over the window
        self.signal: float | None = None
        self.best_signal = float("inf")
        self.best_iteration: int | None = None
        self.best_estimate: torch.Tensor | None = None
        self.iteration = 0
        self.done = False

    def observe(self, iteration: int, output: torch.Tensor,
                estimate: Callable[[], torch.Tensor]) -> None:
        """Take the network output (1, C, H, W) of ``iteration``; ``estimate`` gives the image the
        run would return now (called, and copied, only when the variance reaches a new minimum).
        One host sync."""
        self.iteration = iteration
        stored = output.detach().to(STORAGE)
        value = stored.to(torch.float64)
        if self._sum is None:
            self._sum = torch.zeros_like(value)
        self._outputs.append(stored)
        self._sum += value
        self._sum_squares += float((value * value).sum())
        if len(self._outputs) > self.window:
            old = self._outputs.popleft().to(torch.float64)
            self._sum -= old
            self._sum_squares -= float((old * old).sum())
        if len(self._outputs) < self.window:
            return
        count, pixels = len(self._outputs), value.numel()
        mean_square = float((self._sum * self._sum).sum()) / count
        self.signal = max(self._sum_squares - mean_square, 0.0) / (count * pixels)
        if self.signal < self.best_signal:
            self.best_signal = self.signal
            self.best_iteration = iteration
            self.best_estimate = estimate().detach().clone()
        elif self.best_iteration is not None and iteration - self.best_iteration >= self.patience:
            self.done = True

    def forget_window(self) -> None:
        """Drop the outputs seen so far (after a rollback: they belong to an abandoned path);
        the best point found stays."""
        self._outputs.clear()
        self._sum = None
        self._sum_squares = 0.0
        self.signal = None

    def report(self, ceiling: int) -> dict[str, Any]:
        """What the manifest records: where the run stopped (None: it reached ``ceiling``), the
        detected iteration (the variance's minimum), and why."""
        if self.done:
            reason = (f"the output variance (window {self.window}) had not reached a new minimum "
                      f"for {self.patience} iterations; the estimate of iteration "
                      f"{self.best_iteration} is returned")
        else:
            reason = (f"reached the ceiling of {ceiling} iterations before the variance settled; "
                      "the last estimate is returned")
        return {"rule": "variance", "window": self.window, "patience": self.patience,
                "stopped_at": self.iteration if self.done else None,
                "detected_at": self.best_iteration, "reason": reason}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (the window's outputs included)."""
        return {"outputs": [o.clone() for o in self._outputs],
                "sum": None if self._sum is None else self._sum.clone(),
                "sum_squares": self._sum_squares, "signal": self.signal,
                "best_signal": self.best_signal, "best_iteration": self.best_iteration,
                "best_estimate": (None if self.best_estimate is None
                                  else self.best_estimate.clone()),
                "iteration": self.iteration, "done": self.done}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Continue from a :meth:`state_dict` (tensors moved to ``device`` if given)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else (t.to(device) if device is not None else t).clone()

        self._outputs = deque(t for t in (move(o) for o in state["outputs"]) if t is not None)
        self._sum = move(state["sum"])
        self._sum_squares = float(state["sum_squares"])
        self.signal = state["signal"]
        self.best_signal = float(state["best_signal"])
        self.best_iteration = state["best_iteration"]
        self.best_estimate = move(state["best_estimate"])
        self.iteration = int(state["iteration"])
        self.done = bool(state["done"])
