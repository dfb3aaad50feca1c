"""``deeprestore.check_adjoint`` and operators from two functions (issue 35, item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deeprestore
from deeprestore.physics.adjoint import check_adjoint
from deeprestore.physics.kernels import named_kernel
from deeprestore.physics.operators import Blur, Downsample, Identity, Mask

BUILT_IN = [
    ("identity", Identity(), (1, 3, 32, 32)),
    ("blur uniform9", Blur(named_kernel("uniform9")), (1, 3, 32, 32)),
    ("blur gauss25", Blur(named_kernel("gauss25")), (2, 1, 40, 36)),
    ("downsample ×4 lanczos2", Downsample(4, "lanczos2"), (1, 3, 64, 64)),
    ("downsample ×2 bicubic", Downsample(2, "bicubic"), (1, 1, 32, 48)),
    ("mask", Mask(torch.from_numpy(np.random.default_rng(0).random((32, 32)) > 0.5)),
     (1, 3, 32, 32)),
    ("blur then ×2", Downsample(2, "lanczos2") @ Blur(named_kernel("uniform9")), (1, 3, 32, 32)),
]


@pytest.mark.parametrize("name, operator, shape", BUILT_IN, ids=[b[0] for b in BUILT_IN])
def test_every_built_in_operator_passes(name, operator, shape):
    report = deeprestore.check_adjoint(operator, shape)
    assert report.adjoint < 1e-5 and report.linearity < 1e-5, (name, report)
    assert report.ok and report.problem() is None


def test_an_operator_from_two_lambdas():
    flip = deeprestore.LinearOperator.from_functions(
        lambda x: 2 * torch.flip(x, dims=(-1,)), lambda y: 2 * torch.flip(y, dims=(-1,)))
    assert check_adjoint(flip, (1, 3, 16, 16)).ok


def test_a_wrong_adjoint_and_a_nonlinear_operator_are_named():
    wrong = deeprestore.LinearOperator.from_functions(
        lambda x: torch.flip(x, dims=(-1,)), lambda y: y)
    problem = check_adjoint(wrong, (1, 1, 16, 16)).problem()
    assert problem is not None and problem.startswith("the adjoint does not match")
    squared = deeprestore.LinearOperator.from_functions(lambda x: x * x.abs(), lambda y: y)
    problem = check_adjoint(squared, (1, 1, 16, 16)).problem()
    assert problem is not None and problem.startswith("the operator is not linear")


def test_deepinverse_style_operators_are_accepted_and_others_refused():
    class Physics:  # DeepInverse's LinearPhysics names, no dependency
        def A(self, x):  # noqa: N802
            return x[..., ::2, ::2]

        def A_adjoint(self, y):  # noqa: N802
            out = torch.zeros(*y.shape[:-2], 2 * y.shape[-2], 2 * y.shape[-1])
            out[..., ::2, ::2] = y
            return out

    report = check_adjoint(Physics(), (1, 3, 16, 16))
    assert report.ok and report.output_shape == (1, 3, 8, 8)
    with pytest.raises(TypeError, match="A/A_adjoint"):
        check_adjoint(object(), (1, 3, 16, 16))
