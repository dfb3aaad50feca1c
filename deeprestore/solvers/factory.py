"""From a method's name to its :class:`~deeprestore.solvers.base.Algorithm` (methods.py lists
them)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from deeprestore.config.settings import Settings
from deeprestore.denoisers import Denoiser, get_denoiser
from deeprestore.execution import DEFAULT_EXECUTION, Execution
from deeprestore.methods import DENOISER_BASELINES, NETWORK_METHODS
from deeprestore.solvers.base import Algorithm, Problem
from deeprestore.solvers.baselines import OneShotAlgorithm, denoiser_baseline
from deeprestore.solvers.network import NetworkAlgorithm
from deeprestore.solvers.red import REDAlgorithm


def make_algorithm(
    problem: Problem,
    settings: Settings,
    device: torch.device,
    denoiser: Denoiser | None = None,
    baselines: dict[str, Callable[[Problem], torch.Tensor]] | None = None,
    execution: Execution = DEFAULT_EXECUTION,
) -> Algorithm:
    """The algorithm object for ``settings.method`` (see the module docstring), its steps
    executed as ``execution`` says (network methods)."""
    method = settings.method
    if method in NETWORK_METHODS:
        if settings.precision == "auto":
            raise ValueError("precision 'auto' is resolved before an algorithm is made "
                             "(deeprestore.solvers.timing.choose_precision)")
        if method == "deepred" and settings.lam > 0 and denoiser is None:
            denoiser = get_denoiser(settings.denoiser)
        return NetworkAlgorithm(problem, settings, device, denoiser, execution)
    if method == "red":
        return REDAlgorithm(problem, settings, denoiser or get_denoiser(settings.denoiser))
    if method in DENOISER_BASELINES:  # ``denoiser``: made for this input (bm3d-jpeg)
        # the settings' denoiser when it is of the method's family (``bm3d-torch`` for bm3d)
        named = settings.denoiser if settings.denoiser.removesuffix("-torch") == method else method
        chosen = denoiser if denoiser is not None else get_denoiser(named)
        algorithm = OneShotAlgorithm(problem, denoiser_baseline(chosen, settings.sigma_f),
                                     method)
        algorithm.denoiser_name = chosen.name
        return algorithm
    if baselines and method in baselines:
        return OneShotAlgorithm(problem, baselines[method], method)
    raise ValueError(f"method {method!r} is not available for this problem")
