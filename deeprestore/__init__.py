"""deeprestore: image restoration with Deep Image Prior, DIP-TV and DeepRED.

``deeprestore.restore(image, task=..., method=...)`` restores a numpy array
(:func:`deeprestore.api.restore`), also through an operator of one's own (``operator=``, checked
with ``deeprestore.check_adjoint``); the command line is :mod:`deeprestore.cli`. The engine
below it: ``deeprestore.solve(Problem(...), Settings(...), denoiser=...)``. Importing the
package has no side effect: it imports neither torch nor the engine until ``restore`` is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
#: public name → the module that defines it (imported on first use)
_PUBLIC = {
    "restore": "deeprestore.api",
    "Restoration": "deeprestore.api",
    "LinearOperator": "deeprestore.physics.operators",
    "check_adjoint": "deeprestore.physics.adjoint",
    "Denoiser": "deeprestore.denoisers",
    "register_denoiser": "deeprestore.denoisers",
    "Settings": "deeprestore.config.settings",
    "Problem": "deeprestore.solvers.base",
    "OperatorError": "deeprestore.user_problem",
}
#: the engine below ``restore``: :func:`deeprestore.solvers.runner.restore` on a
#: :class:`Problem` with :class:`Settings`
_ALIASES = {"solve": ("deeprestore.solvers.runner", "restore")}

__all__ = ["__version__", *sorted([*_PUBLIC, *_ALIASES])]


def __getattr__(name: str) -> Any:
    """The public names (:data:`__all__`), imported on first use: importing the package alone
    imports neither torch nor the engine."""
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'deeprestore' has no attribute {name!r}")
