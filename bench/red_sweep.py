"""RED without a network, denoising: its fixed point against the one-shot denoiser, over (λ, σ_f).

    python bench/red_sweep.py [--data ../shared/data] [--images house,peppers,baboon,f16,kodim03]
                              [--crop 64] [--sigma 25] [--lams 0.5,1,2,4,8,20]
                              [--sigma-fs 5,10,15,25,30,35] [--iters 25] [--start y|denoised]
                              [--denoiser nlm] [--estimated-scales 1,1.5,2] [--json PATH]

For each cbm3d9 image: a centre crop, σ noise (0–255 scale; numpy seed = the image's index), the
one-shot denoiser at σ (the paper's NLM baseline), and RED's fixed point
``x ← (y + λ f(x, σ_f)) / (1 + λ)`` (H = I, deeprestore's ``red``) from x = y (or from f(y, σ)).
Prints, per (λ, σ_f), the mean PSNR (RGB) over the images at iterations 1, 5, 10 and the last,
and the best iteration, beside the one-shot denoiser's mean. ``--estimated-scales`` replaces the
fixed σ_f by ``scale × estimate_sigma(x)`` (scikit-image, recomputed each iteration, at least 1),
a denoiser that weakens as x gets cleaner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import estimate_sigma

from deeprestore.arrays import to_tensor
from deeprestore.denoisers import get_denoiser
from deeprestore.io.images import read_image
from deeprestore.metrics import psnr_rgb

ROOT = Path(__file__).resolve().parent.parent


def numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def estimated_sigma(x: torch.Tensor) -> float:
    """scikit-image's noise estimate of a (1, C, H, W) image in [0, 1], on the 0–255 scale."""
    pixels = x[0].permute(1, 2, 0).numpy()
    return 255.0 * float(np.mean(estimate_sigma(pixels, channel_axis=-1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", default="house,peppers,baboon,f16,kodim03")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--lams", default="0.5,1,2,4,8,20")
    parser.add_argument("--sigma-fs", default="5,10,15,25,30,35")
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--start", choices=("y", "denoised"), default="y")
    parser.add_argument("--denoiser", default="nlm")
    parser.add_argument("--estimated-scales", default="",
                        help="σ_f = scale × estimated σ of x, each iteration (not --sigma-fs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    denoise = get_denoiser(args.denoiser)
    checkpoints = sorted({1, 5, 10, args.iters} & set(range(1, args.iters + 1)))
    one_shot: list[float] = []
    curves: dict[str, list[list[float]]] = {}
    for index, name in enumerate(args.images.split(",")):
        pixels = read_image(args.data / "cbm3d9" / f"{name}.png").pixels
        top, left = (pixels.shape[0] - args.crop) // 2, (pixels.shape[1] - args.crop) // 2
        clean = to_tensor(pixels[top:top + args.crop, left:left + args.crop])
        noise = np.random.default_rng(index).normal(0.0, args.sigma / 255.0, clean.shape)
        y = (clean + torch.from_numpy(noise).to(clean.dtype)).clamp(0, 1)
        baseline = denoise(y, args.sigma)
        one_shot.append(psnr_rgb(baseline, clean).item())
        scales = numbers(args.estimated_scales)
        # (label, σ_f on 0–255 or None, scale of the estimated σ or None)
        rules = ([(f"est×{s:g}", None, s) for s in scales] if scales else
                 [(f"{f:g}", f, None) for f in numbers(args.sigma_fs)])
        for lam, (label, fixed, scale) in itertools.product(numbers(args.lams), rules):
            x = y.clone() if args.start == "y" else baseline.clone()
            curve = []
            for _ in range(args.iters):
                sigma_f = fixed if scale is None else max(scale * estimated_sigma(x), 1.0)
                x = ((y + lam * denoise(x, sigma_f)) / (1 + lam)).clamp(0, 1)
                curve.append(psnr_rgb(x, clean).item())
            curves.setdefault(f"{lam:g},{label}", []).append(curve)
        print(f"{name}: one-shot {args.denoiser} at σ {args.sigma:g}: {one_shot[-1]:.2f} dB",
              flush=True)
    print(f"\none-shot {args.denoiser} at σ {args.sigma:g}: {statistics.fmean(one_shot):.2f} dB "
          f"(mean of {len(one_shot)}); RED from x = {args.start}, mean PSNR (dB):\n")
    print("| λ, σ_f | " + " | ".join(f"it {c}" for c in checkpoints) + " | best (it) |")
    print("|---|" + "---|" * (len(checkpoints) + 1))
    rows = []
    for key, per_image in curves.items():
        mean = np.mean(np.array(per_image), axis=0)
        rows.append((float(mean.max()), key, mean))
    for best, key, mean in sorted(rows, reverse=True):
        cells = " | ".join(f"{mean[c - 1]:.2f}" for c in checkpoints)
        print(f"| {key} | {cells} | {best:.2f} ({int(mean.argmax()) + 1}) |")
    if args.json:
        args.json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                         "one_shot": one_shot, "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
