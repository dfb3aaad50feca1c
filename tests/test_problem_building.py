"""From a clean image to a task's problem: ``degrade_pixels`` makes the observation (sizes, crop,
mask) and ``build_problem`` the operator, the start and the reference that match it."""

import numpy as np
import torch
from tiny_problems import astronaut_crop

from deeprestore.apps.degrade import degrade_pixels
from deeprestore.arrays import Image
from deeprestore.physics.degradations import bicubic_upscale
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import build_problem


def test_superres_problem_sizes_and_bicubic_start():
    clean = astronaut_crop(32)
    degraded = degrade_pixels(clean, "superres", factor=4)
    assert degraded.image.shape == (8, 8, 3)
    assert degraded.params["crop"] == [0, 0, 32, 32]
    tp = build_problem(TaskOptions("superres", factor=4), Image(degraded.image), Image(clean))
    p = tp.problem
    assert p.x_init.shape == (1, 3, 32, 32) and p.y.shape == (1, 3, 8, 8)
    assert p.operator.forward(p.x_init).shape == p.y.shape
    bicubic = bicubic_upscale(degraded.image, 4).transpose(2, 0, 1)[None]
    assert torch.allclose(p.x_init, torch.from_numpy(bicubic).float())
    assert tp.protocol == "y" and "bicubic" in tp.baselines


def test_superres_reference_is_cropped_like_degrade():
    clean = astronaut_crop(35)  # 35 = 32 + 3: degrade keeps the centre 32×32
    degraded = degrade_pixels(clean, "superres", factor=4)
    top, left, h, w = degraded.params["crop"]
    assert (h, w) == (32, 32) and top == 1 and left == 1
    tp = build_problem(TaskOptions("superres", factor=4, crop=(top, left, h, w)),
                       Image(degraded.image), Image(clean))
    expected = torch.from_numpy(clean[1:33, 1:33].transpose(2, 0, 1))[None].float()
    assert torch.allclose(tp.problem.reference, expected)


def test_inpaint_observation_is_zero_where_the_mask_is():
    degraded = degrade_pixels(astronaut_crop(16), "inpaint", mask="random:0.5", seed=2)
    mask = degraded.mask
    assert 0.35 < 1 - mask.mean() < 0.65
    assert np.all(degraded.image[mask == 0] == 0)
