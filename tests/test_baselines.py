"""The classical baselines of deeprestore.solvers.baselines restore what they are meant to."""

import torch
from tiny_problems import astronaut_crop

from deeprestore.metrics import psnr_rgb
from deeprestore.physics.kernels import named_kernel
from deeprestore.physics.operators import Blur
from deeprestore.solvers.baselines import wiener_deconvolution


def test_wiener_inverts_a_noise_free_blur_better_than_the_blurred_image():
    clean = torch.from_numpy(astronaut_crop(32).transpose(2, 0, 1))[None].float()
    blurred = Blur(named_kernel("gauss25")).forward(clean)
    restored = wiener_deconvolution(blurred, named_kernel("gauss25"), 0.5)
    assert psnr_rgb(restored, clean) > psnr_rgb(blurred, clean) + 2.0
