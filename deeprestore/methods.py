"""The one registry of methods: which exist, which need a network, which tasks each serves.

How each is built is :func:`deeprestore.solvers.factory.make_algorithm`; this module holds only
names, so that settings, presets, tasks, the CLI and ``reproduce`` read the same facts without
importing any solver.
"""

from __future__ import annotations

#: methods that fit a network T_Θ(z) (Adam steps on Θ): DeepRED and its special cases
NETWORK_METHODS = ("deepred", "dip", "dip-tv")
#: methods that iterate (network methods and RED: settings.iterations applies)
ITERATIVE_METHODS = (*NETWORK_METHODS, "red")
#: one-shot denoisers at the input's σ, the denoising baselines
DENOISER_BASELINES = ("nlm", "bm3d")
#: task → the methods it offers: the iterative ones and the task's classical baselines
TASK_METHODS: dict[str, tuple[str, ...]] = {
    "denoise": (*ITERATIVE_METHODS, *DENOISER_BASELINES),
    "deblur": (*ITERATIVE_METHODS, "wiener"),
    "superres": (*ITERATIVE_METHODS, "bicubic"),
    "inpaint": (*ITERATIVE_METHODS, "biharmonic"),
}
#: every method, in the order help texts list them
METHODS = (*ITERATIVE_METHODS, *DENOISER_BASELINES, "bicubic", "biharmonic", "wiener")
