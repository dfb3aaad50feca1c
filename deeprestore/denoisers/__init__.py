"""Off-the-shelf denoisers f(x, sigma) used by RED and DeepRED (never differentiated).

Interface: a denoiser is a callable ``f(x, sigma) -> x`` where ``x`` is a float tensor of shape
(N, C, H, W) with values in [0, 1] and ``sigma`` is the noise standard deviation on the **0–255
scale**. The result has the same shape, dtype and device as ``x``; a call runs under
``torch.no_grad()`` (f is never differentiated: a ``torch.nn.Module`` denoiser's parameters get
no gradient). A denoiser also says where it runs (``device_kind``: "cpu" for the reference
implementations, which copy to the host and back; "any" for torch ones; informational — the
benchmarks read it, the engine calls every denoiser the same way) and whether it takes a CPU
thread count (``threaded``: the `bm3d` package parallelises a call itself; the engine
gives it all cores in ``sync`` mode and the one core the network leaves free in ``async`` mode).

Registry: :func:`get_denoiser` maps a name (``nlm``, ``bm3d``, ``nlm-torch``, ``bm3d-torch``, and
any registered one) to an instance; ``auto`` resolves to the torch versions on CUDA (where a
denoiser has one) and the paper's reference denoisers on the CPU. The registry is read live:
:func:`register_denoiser` adds one, and third-party packages add theirs under the entry-point
group ``deeprestore.denoisers`` (an entry point names a :class:`Denoiser` or a function
``f(x, sigma)``), loaded the first time a name is looked up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

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
        with torch.no_grad():  # f is never differentiated, nor its parameters trained
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

#: the entry-point group third-party denoisers register under
ENTRY_POINT_GROUP = "deeprestore.denoisers"
_plugins_loaded = False


def register_denoiser(denoiser: Denoiser) -> Denoiser:
    """Add ``denoiser`` to the registry under its name (usable as ``--denoiser NAME`` and as
    ``Settings.denoiser``); a name already taken raises ValueError. Returns it."""
    if denoiser.name in DENOISERS or denoiser.name == "auto":
        raise ValueError(f"a denoiser called {denoiser.name!r} is registered already")
    DENOISERS[denoiser.name] = denoiser
    return denoiser


def _load_plugins() -> None:
    """Register the denoisers of the ``deeprestore.denoisers`` entry points, once per process;
    one that fails to load is skipped (a broken plugin must not break the tool)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in DENOISERS:
            continue
        try:
            found = entry.load()
        except Exception:  # noqa: BLE001 - any import error of a third-party package
            continue
        if isinstance(found, Denoiser):
            DENOISERS[entry.name] = found
        elif callable(found):
            DENOISERS[entry.name] = Denoiser(entry.name, found, "any",
                                             f"plugin {entry.value}")


def denoiser_names() -> tuple[str, ...]:
    """Every registered denoiser's name, plugins included (``--denoiser`` also takes ``auto``)."""
    _load_plugins()
    return tuple(DENOISERS)


def choose_denoiser(requested: str, preset_denoiser: str, device: torch.device) -> str:
    """The concrete denoiser name to run.

    ``requested`` is what the user asked for (``--denoiser``; ``auto`` when not given),
    ``preset_denoiser`` is the preset's choice (e.g. ``nlm`` for Table 1's denoising row). With
    ``auto`` the preset's family is kept and only the implementation follows the device: the
    torch version on CUDA (when the family has one), the paper's reference implementation on the
    CPU.
    """
    names = denoiser_names()
    if requested != "auto" and requested not in names:
        raise ValueError(f"unknown denoiser {requested!r} (known: auto, {', '.join(names)})")
    if requested != "auto":
        return requested
    family = preset_denoiser.removesuffix("-torch")
    if family not in names:
        raise ValueError(f"unknown denoiser {preset_denoiser!r} (known: {', '.join(names)})")
    twin = f"{family}-torch"
    return twin if device.type == "cuda" and twin in names else family


def get_denoiser(name: str) -> Denoiser:
    """The denoiser called ``name`` (a registered one, plugins included)."""
    _load_plugins()
    try:
        return DENOISERS[name]
    except KeyError:
        known = ", ".join(DENOISERS)
        raise ValueError(f"unknown denoiser {name!r} (known: {known})") from None
