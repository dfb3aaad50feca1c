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

import math
from collections import deque
from collections.abc import Callable
from functools import partial
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

    Everything is computed on the outputs' device and nothing is read back in :meth:`observe`
    (issue 42): the minimum, its iteration and estimate, and the iteration where the rule fired
    are device tensors, frozen once it fired. Reading :attr:`done`, :attr:`signal` and the other
    properties reads them back; the runner does so at logged rows only, so a run may go on for
    up to ``log_every − 1`` iterations after the rule fired, which change nothing it returns
    (:meth:`report`'s ``stopped_at`` is where the rule fired).
    """

    def __init__(self, window: int, patience: int) -> None:
        if window < 2 or patience < 1:
            raise ValueError(f"window must be ≥ 2 and patience ≥ 1, got {window}, {patience}")
        self.window = window
        self.patience = patience
        self._outputs: deque[torch.Tensor] = deque()
        self._sum: torch.Tensor | None = None  # Σ x_i over the window (float64)
        self._sum_squares: torch.Tensor | None = None  # Σ ‖x_i‖² over the window (float64)
        self._signal: torch.Tensor | None = None
        #: (best signal, its iteration (NaN: none), iteration the rule fired (NaN: not yet))
        self._best: torch.Tensor | None = None
        self._best_estimate: torch.Tensor | None = None
        self.iteration = 0

    def observe(self, iteration: int, output: torch.Tensor,
                estimate: Callable[[], torch.Tensor]) -> None:
        """Take the network output (1, C, H, W) of ``iteration``; ``estimate`` gives the image the
        run would return now (kept where the variance reaches a new minimum). No host read."""
        self.iteration = iteration
        stored = output.detach().to(STORAGE)
        value = stored.to(torch.float64)
        if self._sum is None or self._sum_squares is None:
            self._sum = torch.zeros_like(value)
            self._sum_squares = torch.zeros((), dtype=torch.float64, device=value.device)
        self._outputs.append(stored)
        self._sum += value
        self._sum_squares += (value * value).sum()
        if len(self._outputs) > self.window:
            old = self._outputs.popleft().to(torch.float64)
            self._sum -= old
            self._sum_squares -= (old * old).sum()
        if len(self._outputs) < self.window:
            return
        count, pixels = len(self._outputs), value.numel()
        mean_square = (self._sum * self._sum).sum() / count
        self._signal = (self._sum_squares - mean_square).clamp_min(0.0) / (count * pixels)
        self._follow(iteration, self._signal, estimate().detach())

    def _follow(self, iteration: int, signal: torch.Tensor, estimate: torch.Tensor) -> None:
        """Keep the minimum (signal, iteration, estimate) and fire ``patience`` iterations after
        it, on the device; nothing changes once fired."""
        if self._best is None or self._best_estimate is None:
            nan = math.nan
            self._best = torch.tensor([math.inf, nan, nan], dtype=torch.float64,
                                      device=signal.device)
            self._best_estimate = estimate.clone()
        best_signal, best_at, fired_at = self._best.unbind()
        live = fired_at.isnan()
        improved = (signal < best_signal) & live
        fires = (~improved & live & (iteration - best_at >= self.patience))
        self._best.copy_(torch.stack([
            torch.where(improved, signal, best_signal),
            torch.where(improved, float(iteration), best_at),
            torch.where(fires, float(iteration), fired_at)]))
        self._best_estimate.copy_(torch.where(improved, estimate, self._best_estimate))

    def _read(self) -> tuple[float, int | None, int | None]:
        """(best signal, its iteration or None, iteration the rule fired or None), read back."""
        if self._best is None:
            return math.inf, None, None
        best, at, fired = self._best.tolist()
        return best, (None if math.isnan(at) else int(at)), (
            None if math.isnan(fired) else int(fired))

    @property
    def signal(self) -> float | None:
        """The latest signal (read back; None until the window is full)."""
        return None if self._signal is None else float(self._signal)

    @property
    def done(self) -> bool:
        """Whether the rule fired (read back)."""
        return self._read()[2] is not None

    @property
    def best_signal(self) -> float:
        return self._read()[0]

    @property
    def best_iteration(self) -> int | None:
        """The iteration of the variance's minimum so far (read back)."""
        return self._read()[1]

    @property
    def best_estimate(self) -> torch.Tensor | None:
        """The estimate at the minimum (None before one)."""
        return None if self.best_iteration is None else self._best_estimate

    def forget_window(self) -> None:
        """Drop the outputs seen so far (after a rollback: they belong to an abandoned path);
        the best point found stays."""
        self._outputs.clear()
        self._sum = None
        self._sum_squares = None
        self._signal = None

    def report(self, ceiling: int) -> dict[str, Any]:
        """What the manifest records: where the rule fired (None: the run reached
        ``ceiling``), the detected iteration (the variance's minimum), and why."""
        _, best_at, fired_at = self._read()
        if fired_at is not None:
            reason = (f"the output variance (window {self.window}) had not reached a new minimum "
                      f"for {self.patience} iterations; the estimate of iteration "
                      f"{best_at} is returned")
        else:
            reason = (f"reached the ceiling of {ceiling} iterations before the variance settled; "
                      "the last estimate is returned")
        return {"rule": "variance", "window": self.window, "patience": self.patience,
                "stopped_at": fired_at, "detected_at": best_at, "reason": reason}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (the window's outputs included)."""
        best, at, fired = self._read()
        return {"outputs": [o.clone() for o in self._outputs],
                "sum": None if self._sum is None else self._sum.clone(),
                "sum_squares": None if self._sum_squares is None else float(self._sum_squares),
                "signal": self.signal,
                "best_signal": best, "best_iteration": at,
                "best_estimate": (None if at is None or self._best_estimate is None
                                  else self._best_estimate.clone()),
                "iteration": self.iteration, "done": fired is not None, "stopped_at": fired}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Continue from a :meth:`state_dict` (tensors moved to ``device`` if given)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else (t.to(device) if device is not None else t).clone()

        self._outputs = deque(t for t in (move(o) for o in state["outputs"]) if t is not None)
        self._sum = move(state["sum"])
        where = device if device is not None else (
            self._sum.device if self._sum is not None else torch.device("cpu"))
        number = partial(torch.tensor, dtype=torch.float64, device=where)
        self._sum_squares = (None if state["sum_squares"] is None or self._sum is None
                             else number(float(state["sum_squares"])))
        self._signal = None if state["signal"] is None else number(float(state["signal"]))
        self.iteration = int(state["iteration"])
        estimate = move(state["best_estimate"])
        if estimate is None:
            self._best, self._best_estimate = None, None
            return
        at, fired = state["best_iteration"], state.get("stopped_at")
        if fired is None and state["done"]:
            fired = self.iteration  # a state saved before the rule kept where it fired
        self._best = number([float(state["best_signal"]),
                             math.nan if at is None else float(at),
                             math.nan if fired is None else float(fired)])
        self._best_estimate = estimate
