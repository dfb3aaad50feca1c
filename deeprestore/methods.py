"""The one registry of methods: which exist, which need a network, which iterate.

How each is built is :func:`deeprestore.solvers.factory.make_algorithm`; which tasks offer which
baselines is :mod:`deeprestore.tasks.registry` (``Task.methods``). This module holds only names,
so that settings, presets, tasks, the CLI and ``reproduce`` read the same facts without
importing any solver.
"""

from __future__ import annotations

#: methods that fit a network T_Θ(z) (Adam steps on Θ): DeepRED and its special cases
NETWORK_METHODS = ("deepred", "dip", "dip-tv")
#: methods that iterate (network methods and RED: settings.iterations applies)
ITERATIVE_METHODS = (*NETWORK_METHODS, "red")
#: one-shot denoisers at the input's σ, the denoising baselines
DENOISER_BASELINES = ("nlm", "bm3d")
#: every method, in the order help texts list them
METHODS = (*ITERATIVE_METHODS, *DENOISER_BASELINES, "bicubic", "biharmonic", "wiener")
