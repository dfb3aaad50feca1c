"""Off-the-shelf denoisers f(x, sigma) used by RED and DeepRED (never differentiated).

Interface: a denoiser is a callable ``f(x, sigma) -> x`` where ``x`` is a float tensor of shape
(N, C, H, W) with values in [0, 1] and ``sigma`` is the noise standard deviation on the **0–255
scale**. The result has the same shape, dtype and device as ``x``. A denoiser also says where it
runs best (``device_kind``: "cpu" for the reference implementations, "any" for torch ones), so the
engine can plan transfers and decide whether a call may run in the background, and whether it
takes a CPU thread count (``threaded``: the `bm3d` package parallelises a call itself; the engine
gives it all cores in ``sync`` mode and the one core the network leaves free in ``async`` mode).

Registry: :func:`get_denoiser` maps a name (``nlm``, ``bm3d``, ``nlm-torch``, ``bm3d-torch``) to an
instance; ``auto`` resolves to the torch versions on CUDA and the paper's reference denoisers on
the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

DenoiseFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Denoiser:
    """A named denoiser ``f(x, sigma)``: x (N, C, H, W) in [0, 1], sigma on the 0–255 scale."""

    name: str
    function: DenoiseFn
    device_kind: str  # "cpu": runs on the host (numpy); "any": runs on the tensor's device
    description: str
    threaded: bool = False  # the function takes ``threads=`` (CPU threads of one call)

    def __call__(self, x: torch.Tensor, sigma: float, threads: int | None = None) -> torch.Tensor:
        """Denoise x (N, C, H, W) in [0, 1] at noise std ``sigma`` (0–255 scale).

        ``threads``: CPU threads one call may use (only for ``threaded`` denoisers; None: the
        library's own choice). Other denoisers ignore it.
        """
        if sigma < 0 or sigma != sigma:
            raise ValueError(f"denoiser sigma must be a non-negative number, got {sigma}")
        if threads is not None and threads < 1:
            raise ValueError(f"denoiser threads must be at least 1, got {threads}")
        if self.threaded:
            return self.function(x, float(sigma), threads=threads)  # type: ignore[call-arg]
        return self.function(x, float(sigma))


def _nlm(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from deeprestore.denoisers.reference import nlm_skimage

    return nlm_skimage(x, sigma)


def _bm3d(x: torch.Tensor, sigma: float, threads: int | None = None) -> torch.Tensor:
    from deeprestore.denoisers.reference import bm3d_package

    return bm3d_package(x, sigma, threads=threads)


def _nlm_torch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from deeprestore.denoisers.nlm_torch import nlm_torch

    return nlm_torch(x, sigma)


def _bm3d_torch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from deeprestore.denoisers.bm3d_torch import bm3d_torch

    return bm3d_torch(x, sigma)


DENOISERS: dict[str, Denoiser] = {
    d.name: d
    for d in (
        Denoiser("nlm", _nlm, "cpu", "scikit-image fast NLM, as the DeepRED authors ran it"),
        Denoiser("bm3d", _bm3d, "cpu", "BM3D/CBM3D from the `bm3d` package (non-commercial)",
                 threaded=True),
        Denoiser("nlm-torch", _nlm_torch, "any", "non-local means in torch (CPU or GPU)"),
        Denoiser("bm3d-torch", _bm3d_torch, "any", "BM3D/CBM3D in torch (CPU or GPU)"),
    )
}

#: Names accepted by ``--denoiser`` (``auto`` picks per device).
DENOISER_CHOICES = ("auto", *DENOISERS)


def choose_denoiser(requested: str, preset_denoiser: str, device: torch.device) -> str:
    """The concrete denoiser name to run.

    ``requested`` is what the user asked for (``--denoiser``; ``auto`` when not given),
    ``preset_denoiser`` is the preset's choice (e.g. ``nlm`` for Table 1's denoising row). With
    ``auto`` the preset's family is kept and only the implementation follows the device: the
    torch version on CUDA, the paper's reference implementation on the CPU.
    """
    if requested not in DENOISER_CHOICES:
        raise ValueError(f"unknown denoiser {requested!r} (known: {', '.join(DENOISER_CHOICES)})")
    if requested != "auto":
        return requested
    family = preset_denoiser.removesuffix("-torch")
    if family not in DENOISERS:
        raise ValueError(f"unknown denoiser {preset_denoiser!r} (known: {', '.join(DENOISERS)})")
    return f"{family}-torch" if device.type == "cuda" else family


def get_denoiser(name: str) -> Denoiser:
    """The denoiser called ``name`` (one of :data:`DENOISERS`)."""
    try:
        return DENOISERS[name]
    except KeyError:
        known = ", ".join(DENOISERS)
        raise ValueError(f"unknown denoiser {name!r} (known: {known})") from None
