"""The parameters of one restoration run, with their types, defaults and checks.

A :class:`Settings` is what the engine receives: one method and every number it needs. Presets
(``presets/*.toml``) and the command line only *produce* Settings; the engine never reads TOML.
Units: ``sigma_f`` is on the 0–255 scale; ``sigma_noise`` and ``input_scale`` are on the [0, 1]
scale of the network input; ``lr`` is Adam's learning rate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from deeprestore.methods import METHODS

X_UPDATES = ("fixed-point", "steepest-descent")
OUTPUTS = ("ema", "network", "x", "x-u")
INPUT_KINDS = ("gaussian", "uniform")
DENOISER_MODES = ("sync", "async")
PRECISIONS = ("float32", "tf32", "bf16", "auto")
LOSS_TERMS = ("sum", "mean")
X_STARTS = ("problem", "zeros")
UPSAMPLE_MODES = ("bilinear", "nearest")
STOP_RULES = ("fixed", "auto")


class SettingsError(ValueError):
    """A parameter that is unknown, of the wrong type or out of range (message names the key)."""


@dataclass
class Settings:
    """Every parameter of one run of one method (see docs/algorithm.md for their roles)."""

    method: str = "deepred"
    # --- optimisation of the network T_Θ(z) (DIP, DIP-TV, DeepRED) ---
    iterations: int = 5000  #: outer iterations (ADMM rounds / Adam steps)
    lr: float = 0.01  #: Adam learning rate
    sigma_noise: float = 0.033  #: std of the fresh noise added to z every step ([0, 1] scale)
    input_channels: int = 32  #: channels of z
    net_channels: int = 128  #: channels of the skip network's down and up convolutions
    skip_channels: int = 4  #: channels of its skip connections
    upsample: str = "bilinear"  #: its upsampling: "bilinear" or "nearest"
    input_scale: float = 0.1  #: z ~ N(0, input_scale²) (or U[0, input_scale) if uniform)
    input_kind: str = "uniform"  #: "uniform" (reference code, default) or "gaussian" (paper)
    ema: float = 0.99  #: weight of the exponential moving average of network outputs
    runs: int = 1  #: independent runs (different z and weights) whose outputs are averaged
    seed: int = 0  #: seeds every random draw; same seed + CPU → identical output
    output: str = "ema"  #: what is returned: "ema", "network", "x" or "x-u"
    # --- RED / ADMM (DeepRED, RED) ---
    denoiser: str = "nlm"  #: f(x): "nlm", "bm3d" (or their "-torch" versions)
    sigma_f: float | None = None  #: σ given to f, 0–255 scale (None: the input's σ)
    lam: float = 0.5  #: λ, weight of the RED prior
    mu: float = 0.5  #: µ, the ADMM penalty
    denoise_every: int = 10  #: apply f every this many iterations (reuse the last f(x) between)
    inner_steps: int = 1  #: J, x-updates per ADMM round
    x_update: str = "fixed-point"  #: "fixed-point" (Eq. 11) or "steepest-descent" (Eq. 12)
    x_step: float = 0.5  #: c, the step of the steepest-descent x-update
    clip_x: bool = True  #: clip x to [0, 1] after its update (the authors' code does)
    denoiser_mode: str = "sync"  #: "sync": Algorithm 1's order; "async": background denoiser
    # --- rules of the authors' released code (docs/algorithm.md, "Paper vs the authors' code")
    #: "sum": (½‖H T − y‖² + µ/2 ‖x − T − u‖²) / pixels of x (the paper's sums);
    #: "mean": each term averaged over its own pixels (the authors' code: MSE + µ·MSE)
    loss_terms: str = "sum"
    #: λ and µ both grow by this after an iteration whose PSNR(H T_Θ(z), y) passes the
    #: threshold, which then grows by ``grow_threshold_step`` (0 = off; the code's denoising: 0.03)
    grow_step: float = 0.0
    grow_threshold: float = 20.0  #: the growth rule's first threshold, dB
    grow_threshold_step: float = 0.01  #: dB added to the threshold at every growth
    #: dB: when PSNR(H T_Θ(z), y) falls more than this below the last good iteration's, the
    #: weights of that iteration come back (DIP's denoising code: 5; 0 = off)
    backtrack_drop: float = 0.0
    #: sync mode: f(x) one denoiser period late, as the code's thread (f applied on rounds d,
    #: 2d, … to the x of d rounds before; f = x₀ until then). Async mode lags by its own timing
    #: and ignores it.
    denoiser_lag: bool = False
    #: where x and f(x) start: "problem" (y; bicubic for SR) or "zeros" (the code's SR)
    x_start: str = "problem"
    lr_decay: float = 1.0  #: learning rate × this every ``lr_decay_every`` iterations (1 = off)
    lr_decay_every: int = 1000  #: iterations between two learning-rate decays
    # --- DIP-TV ---
    tv_weight: float = 0.0  #: λ of DIP-TV: weight of the isotropic TV of T_Θ(z)
    # --- RED without a network: CG inner solves for H ≠ I ---
    cg_steps: int = 10  #: conjugate-gradient steps per RED iteration when H is not the identity
    # --- when to stop (network methods) ---
    #: "fixed": run ``iterations``; "auto": stop when the moving variance of the network
    #: outputs (window ``stop_window``) has not reached a new minimum for ``stop_patience``
    #: iterations and return the estimate at that minimum; ``iterations`` is the ceiling
    stop: str = "fixed"
    #: W, outputs the automatic stop's variance is taken over (200: docs/notes/autostop.md)
    stop_window: int = 200
    #: P, iterations without a new minimum before it stops (300: docs/notes/autostop.md)
    stop_patience: int = 300
    # --- logging and speed ---
    log_every: int = 10  #: one CSV row (and one host↔device sync) every this many iterations
    #: "float32", "tf32" or "bf16" (network only), or "auto": bf16 where a step measured at
    #: least 1.25× faster on this CPU, else float32 (deeprestore.solvers.precision)
    precision: str = "float32"
    compile: bool = False  #: torch.compile the network step

    def validate(self) -> Settings:
        """Check ranges and choices; raise :class:`SettingsError` naming the first bad key."""
        _choice("method", self.method, METHODS)
        _choice("x_update", self.x_update, X_UPDATES)
        _choice("output", self.output, OUTPUTS)
        _choice("input_kind", self.input_kind, INPUT_KINDS)
        _choice("denoiser_mode", self.denoiser_mode, DENOISER_MODES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("upsample", self.upsample, UPSAMPLE_MODES)
        _choice("loss_terms", self.loss_terms, LOSS_TERMS)
        _choice("x_start", self.x_start, X_STARTS)
        _choice("stop", self.stop, STOP_RULES)
        for key in ("iterations", "runs", "input_channels", "denoise_every", "inner_steps",
                    "log_every", "cg_steps", "net_channels", "lr_decay_every",
                    "stop_patience"):
            if getattr(self, key) < 1:
                raise SettingsError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.stop_window < 2:
            raise SettingsError(f"stop_window must be at least 2, got {self.stop_window}")
        if self.skip_channels < 0:
            raise SettingsError(f"skip_channels must be ≥ 0, got {self.skip_channels}")
        for key in ("lr", "sigma_noise", "input_scale", "lam", "mu", "x_step", "tv_weight",
                    "grow_step", "grow_threshold_step", "backtrack_drop"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise SettingsError(f"{key} must be a finite number ≥ 0, got {value}")
        if self.sigma_f is not None and (not math.isfinite(self.sigma_f) or self.sigma_f < 0):
            raise SettingsError(f"sigma_f must be a finite number ≥ 0, got {self.sigma_f}")
        if not 0 <= self.ema < 1:
            raise SettingsError(f"ema must be in [0, 1), got {self.ema}")
        if not math.isfinite(self.grow_threshold):
            raise SettingsError(f"grow_threshold must be a finite number (dB), got "
                                f"{self.grow_threshold}")
        if not (math.isfinite(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise SettingsError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr <= 0:
            raise SettingsError(f"lr must be > 0, got {self.lr}")
        from deeprestore.denoisers import denoiser_names

        _choice("denoiser", self.denoiser, denoiser_names())
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON/TOML-friendly)."""
        return dataclasses.asdict(self)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SettingsError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


SETTING_TYPES: dict[str, tuple[type, ...]] = {}
for _field in fields(Settings):
    _annotation = str(_field.type)
    if _annotation.startswith("float"):
        SETTING_TYPES[_field.name] = (float,)
    elif _annotation == "int":
        SETTING_TYPES[_field.name] = (int,)
    elif _annotation == "bool":
        SETTING_TYPES[_field.name] = (bool,)
    else:
        SETTING_TYPES[_field.name] = (str,)


def coerce_setting(key: str, value: Any, where: str = "") -> Any:
    """Check that ``value`` fits setting ``key`` and return it in the field's type.

    Integers are accepted for float settings; booleans are never taken for numbers. Raises
    :class:`SettingsError` naming the key (and ``where`` it came from) on an unknown key or a
    wrong type.
    """
    place = f" in {where}" if where else ""
    if key not in SETTING_TYPES:
        known = ", ".join(sorted(SETTING_TYPES))
        raise SettingsError(f"unknown setting {key!r}{place} (known: {known})")
    (kind,) = SETTING_TYPES[key]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise SettingsError(
        f"setting {key!r}{place} must be {kind.__name__}, got {type(value).__name__} {value!r}"
    )
