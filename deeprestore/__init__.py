"""deeprestore: image restoration with Deep Image Prior, DIP-TV and DeepRED.

``deeprestore.restore(image, task=..., method=...)`` restores a numpy array
(:func:`deeprestore.api.restore`); the command line is :mod:`deeprestore.cli`. Importing the
package has no side effect: it imports neither torch nor the engine until ``restore`` is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LinearOperator", "Restoration", "__version__", "check_adjoint", "restore"]


def __getattr__(name: str) -> Any:
    """``deeprestore.restore``, ``Restoration``, ``LinearOperator`` and ``check_adjoint``,
    imported on first use."""
    if name in ("restore", "Restoration"):
        from deeprestore import api

        return getattr(api, name)
    if name == "LinearOperator":
        from deeprestore.physics.operators import LinearOperator

        return LinearOperator
    if name == "check_adjoint":
        from deeprestore.physics.adjoint import check_adjoint

        return check_adjoint
    raise AttributeError(f"module 'deeprestore' has no attribute {name!r}")
