"""Which arithmetic a network run uses when ``precision = "auto"``: chosen by measuring.

A CPU that reports bf16 arithmetic (AVX512-BF16, AMX) can run the network's convolutions in
bf16, channels-last, several times faster than float32 — or, on some machines, many times
slower (docs/performance.md). So ``auto`` does not trust a flag: the cost estimate times one
network step in each candidate precision on the image (or its centre crop) and keeps bf16
only when it is at least :data:`BF16_MIN_SPEEDUP` times faster. Where there is nothing to
measure it is float32 at once: on CUDA (the paper's arithmetic; ``--precision bf16`` or
``tf32`` ask for the others), on a CPU without bf16 arithmetic, for methods without a network.

This module holds the rule and the record of a choice; the timing is
:func:`deeprestore.solvers.timing.choose_precision`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from deeprestore import execution
from deeprestore.config.settings import Settings
from deeprestore.methods import NETWORK_METHODS

#: the precision ``auto`` asks to be resolved
AUTO = "auto"
#: bf16 is chosen when float32's step takes at least this many times bf16's
BF16_MIN_SPEEDUP = 1.25


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why.

    ``precision``: ``float32``, ``tf32`` or ``bf16``; ``requested``: what the settings said
    (``auto`` or that precision); ``step_seconds``: seconds per network step measured for each
    candidate (empty when nothing was measured); ``timed_on``: the side of the centre crop
    they were measured on (None: the whole image); ``reason``: why, in words, when nothing
    was measured.
    """

    precision: str
    requested: str
    step_seconds: dict[str, float] = field(default_factory=dict)
    timed_on: int | None = None
    reason: str = ""
    #: where a measured choice comes from: "measured now, kept in PATH" or "kept since DATE
    #: (PATH)" (:mod:`deeprestore.solvers.decisions`); empty when nothing was measured
    decided: str = ""

    @property
    def bf16_speedup(self) -> float | None:
        """float32's step time ÷ bf16's, when both were measured."""
        seconds = self.step_seconds
        if "float32" in seconds and seconds.get("bf16", 0) > 0:
            return seconds["float32"] / seconds["bf16"]
        return None

    def describe(self) -> str:
        """``bf16, measured 2.1× float32's speed`` / ``float32 (bf16 measured 1.1×, under
        1.25×)`` / ``float32 (this CPU has no bf16 arithmetic)``: for the cost line."""
        speedup = self.bf16_speedup
        kept = ", this machine's kept choice" if self.decided.startswith("kept") else ""
        if speedup is not None and self.precision == "bf16":
            return f"bf16, measured {speedup:.2g}× float32's speed{kept}"
        if speedup is not None:
            return (f"float32 (bf16 measured {speedup:.2g}× its speed, under "
                    f"{BF16_MIN_SPEEDUP:g}×{kept})")
        return f"{self.precision} ({self.reason})" if self.reason else self.precision

    def record(self) -> dict[str, Any]:
        """The manifest's ``precision`` entry."""
        speedup = self.bf16_speedup
        return {"used": self.precision, "requested": self.requested,
                "step_seconds": {k: round(v, 6) for k, v in self.step_seconds.items()},
                "bf16_speedup": None if speedup is None else round(speedup, 3),
                "timed_on": self.timed_on, "reason": self.reason or None,
                "decided": self.decided or None}


def candidates(settings: Settings, device: torch.device) -> tuple[str, ...] | PrecisionChoice:
    """The precisions to time for ``settings`` on ``device`` (float32 first), or the choice
    itself when there is nothing to measure (an explicit precision; ``auto`` on CUDA, on a CPU
    without bf16 arithmetic, or for a method without a network: float32)."""
    requested = settings.precision
    if requested != AUTO:
        return PrecisionChoice(requested, requested)
    if settings.method not in NETWORK_METHODS:
        return PrecisionChoice("float32", AUTO, reason="no network")
    if device.type != "cpu":
        return PrecisionChoice("float32", AUTO, reason=f"on {device.type}, the paper's")
    if not execution.cpu_has_native_bf16():
        return PrecisionChoice("float32", AUTO, reason="this CPU has no bf16 arithmetic")
    return ("float32", "bf16")


def decide(step_seconds: dict[str, float], timed_on: int | None = None) -> PrecisionChoice:
    """``auto``'s choice from the measured seconds per step of float32 and bf16: bf16 when
    float32's is at least :data:`BF16_MIN_SPEEDUP` times bf16's, else float32."""
    float32, bf16 = step_seconds["float32"], step_seconds["bf16"]
    precision = "bf16" if float32 >= BF16_MIN_SPEEDUP * bf16 else "float32"
    return PrecisionChoice(precision, AUTO, dict(step_seconds), timed_on)
