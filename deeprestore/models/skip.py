"""The Deep Image Prior "skip" encoder-decoder and its random input.

The network knows nothing of tasks: it maps a noise tensor ``z`` of shape (N, C_in, H, W) to an
image of shape (N, C_out, H, W) in [0, 1] (sigmoid output). The architecture follows the DIP
authors' ``skip`` network as used by DIP, DIP-TV and DeepRED (REFERENCE.md §3): 5 scales, 128
channels down and up, 4 skip channels, 3×3 convolutions with reflection padding, stride-2
convolutions to go down, bilinear upsampling, BatchNorm and LeakyReLU(0.2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: The number of scales of the paper's network (REFERENCE.md §3).
SCALES = 5
#: Spatial sizes are padded to a multiple of this (2 ** the number of scales): a tile side, or
#: a size a memory model predicts, is best one of its multiples.
SIZE_MULTIPLE = 2**SCALES


def half_side(side: int) -> int:
    """Half of ``side`` (pixels) rounded down to a multiple of :data:`SIZE_MULTIPLE`: the tile
    side to try when ``side`` ran out of memory."""
    return side // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE


class ReflectionPad(nn.Module):
    """Reflection padding of (N, C, H, W) by ``pad`` px on every side, in the input's dtype.

    Under CPU autocast (not CUDA's) torch's ``reflection_pad2d`` is on the float32 list: each bf16
    activation would be cast up before every 3×3 convolution and back down inside it, and the
    pad's backward run in float32; the bf16 step is faster without those casts
    (``bench/profile_step.py --ablation``; docs/notes/bf16-on-a-cpu.md). Padding copies values,
    so its dtype changes nothing but the memory traffic."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.pad,) * 4
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return F.pad(x, pad, mode="reflect")
        return F.pad(x, pad, mode="reflect")


def _channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a channels-last CPU tensor (measured there; CUDA's layout is left as
    torch makes it)."""
    return (x.device.type == "cpu" and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def dense_channels_last(grad: torch.Tensor) -> torch.Tensor:
    """A gradient hook for the two parts of a channels-last concatenation: the gradient each
    part gets back is a slice of the concatenation's along the channels, strided in neither
    layout, and torch's bilinear-upsampling backward is several times slower on such a slice
    than on a dense copy, which costs little (``python bench/profile_step.py --ablation``;
    docs/notes/bf16-on-a-cpu.md)."""
    return grad.contiguous(memory_format=torch.channels_last)


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, runs: int = 1) -> nn.Sequential:
    """Convolution with reflection padding ("same" size for stride 1, halves it for stride 2):
    (N, runs*c_in, H, W) → (N, runs*c_out, H', W'), ``runs`` independent groups (one per run of
    a :class:`~deeprestore.models.batched.BatchedSkipNet`; 1 for a SkipNet). The Conv2d is at
    index -1, after the :class:`ReflectionPad`."""
    pad = (kernel - 1) // 2
    layers: list[nn.Module] = []
    if pad:
        layers.append(ReflectionPad(pad))
    layers.append(nn.Conv2d(runs * c_in, runs * c_out, kernel, stride=stride, padding=0,
                            bias=True, groups=runs))
    return nn.Sequential(*layers)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm over (N, C, H, W) without the ``num_batches_tracked`` counter: with a momentum
    nothing reads it, and its increment was one more small op per layer and step (30 per
    network step; issue 42). A saved state that has the counter (checkpoints made before) loads,
    the counter ignored."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.num_batches_tracked = None  # type: ignore[assignment]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """A :class:`BatchNorm` over ``channels``."""
    return BatchNorm(channels)


def bn_act(channels: int) -> list[nn.Module]:
    """BatchNorm then LeakyReLU(0.2), DIP's activation block."""
    return [batch_norm(channels), nn.LeakyReLU(0.2, inplace=True)]


def upsample2(x: torch.Tensor, mode: str) -> torch.Tensor:
    """×2 upsampling of (N, C, H, W) by ``mode`` (bilinear or bicubic without corner alignment,
    or nearest), as in the DIP code."""
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False)
    return F.interpolate(x, scale_factor=2.0, mode=mode)


def cat_runs(runs: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-run channel concatenation: (B, runs*ca, H, W), (B, runs*cb, H, W) →
    (B, runs*(ca+cb), H, W) with run r's block being [a_r, b_r] (plain concatenation for one)."""
    if runs == 1:
        return torch.cat([a, b], dim=1)
    return torch.cat([a.unflatten(1, (runs, -1)), b.unflatten(1, (runs, -1))], dim=2).flatten(1, 2)


class Scale(nn.Module):
    """One scale of the skip network: concat(skip branch, down→deeper→up branch) → up block,
    for ``runs`` independent networks side by side on the channel dim (1 for a SkipNet)."""

    def __init__(
        self,
        c_in: int,
        c_down: int,
        c_up: int,
        c_skip: int,
        deeper: Scale | None,
        upsample_mode: str,
        runs: int = 1,
    ) -> None:
        super().__init__()
        self.runs = runs
        self.skip = (
            nn.Sequential(conv(c_in, c_skip, 1, runs=runs), *bn_act(runs * c_skip))
            if c_skip > 0
            else None
        )
        down: list[nn.Module] = [
            conv(c_in, c_down, 3, stride=2, runs=runs),
            *bn_act(runs * c_down),
            conv(c_down, c_down, 3, runs=runs),
            *bn_act(runs * c_down),
        ]
        if deeper is not None:
            down.append(deeper)
        self.down = nn.Sequential(*down)
        self.upsample_mode = upsample_mode
        c_deeper = deeper.c_up if deeper is not None else c_down
        self.c_up = c_up
        self.up = nn.Sequential(
            batch_norm(runs * (c_skip + c_deeper)),
            conv(c_skip + c_deeper, c_up, 3, runs=runs),
            *bn_act(runs * c_up),
            conv(c_up, c_up, 1, runs=runs),
            *bn_act(runs * c_up),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, runs*c_in, H, W) → (B, runs*c_up, H, W); H, W even."""
        deeper = upsample2(self.down(x), self.upsample_mode)
        if self.skip is not None:
            skipped = self.skip(x)
            for part in (skipped, deeper):
                if part.requires_grad and _channels_last(part):
                    part.register_hook(dense_channels_last)
            deeper = cat_runs(self.runs, skipped, deeper)
        return self.up(deeper)


def skip_layers(in_channels: int, out_channels: int, channels: int, skip_channels: int,
                scales: int, upsample_mode: str, runs: int = 1) -> tuple[Scale, nn.Sequential]:
    """The body (the outermost :class:`Scale`, the deeper ones inside it) and the head (1×1
    convolution, sigmoid) of ``runs`` skip networks side by side on the channel dim (1: a
    :class:`SkipNet`). Built from the deepest scale outwards; only the outermost sees
    ``in_channels``."""
    deeper: Scale | None = None
    for level in reversed(range(scales)):
        c_in = in_channels if level == 0 else channels
        deeper = Scale(c_in, channels, channels, skip_channels, deeper, upsample_mode, runs)
    assert deeper is not None
    return deeper, nn.Sequential(conv(channels, out_channels, 1, runs=runs), nn.Sigmoid())


class SkipNet(nn.Module):
    """DIP "skip" network (REFERENCE.md §3) that accepts any spatial size.

    Input ``z``: (N, in_channels, H, W), any H, W ≥ 1. It is padded by reflection to a multiple of
    2**scales (:data:`SIZE_MULTIPLE` for the default 5 scales; bottom and right; at least twice
    that, so the deepest scale is 2×2 and BatchNorm sees more than one value per channel), passed
    through the encoder-decoder, and the output is cropped back, so the result is
    (N, out_channels, H, W) with values in (0, 1).
    """

    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int = 3,
        channels: int = 128,
        skip_channels: int = 4,
        scales: int = SCALES,
        upsample_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        #: the constructor's arguments (a BatchedSkipNet is built from them)
        self.architecture = {"in_channels": in_channels, "out_channels": out_channels,
                             "channels": channels, "skip_channels": skip_channels,
                             "scales": scales, "upsample_mode": upsample_mode}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.multiple = 2**scales
        self.body, self.head = skip_layers(in_channels, out_channels, channels, skip_channels,
                                           scales, upsample_mode)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        height, width = z.shape[-2:]
        padded = pad_to_multiple(z, self.multiple, minimum=2 * self.multiple)
        out = self.head(self.body(padded))
        return out[..., :height, :width]


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right by reflection so H and W are multiples of ``multiple``
    and at least ``minimum``.

    Reflection needs the pad to be smaller than the size, so large pads (tiny images) are done in
    several reflections.
    """
    height, width = x.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, minimum)
    target_w = max(-(-width // multiple) * multiple, minimum)
    while x.shape[-2] < target_h or x.shape[-1] < target_w:
        cur_h, cur_w = x.shape[-2:]
        pad_h = min(target_h - cur_h, cur_h - 1)
        pad_w = min(target_w - cur_w, cur_w - 1)
        if pad_h <= 0 and pad_w <= 0:  # a 1-pixel side cannot be reflected
            x = F.pad(x, (0, target_w - cur_w, 0, target_h - cur_h), mode="replicate")
            break
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="reflect")
    return x


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def make_input(
    channels: int,
    height: int,
    width: int,
    *,
    scale: float = 0.1,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    batch: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random network input z of shape (batch, channels, height, width).

    ``kind="gaussian"``: i.i.d. N(0, scale²) (the DeepRED paper); ``kind="uniform"``: i.i.d.
    U[0, scale) (the DIP/DeepRED reference code).
    """
    shape = (batch, channels, height, width)
    if kind == "gaussian":
        z = torch.randn(shape, generator=generator) * scale
    elif kind == "uniform":
        z = torch.rand(shape, generator=generator) * scale
    else:
        raise ValueError(f"unknown input kind {kind!r} (use 'gaussian' or 'uniform')")
    return z.to(device)
