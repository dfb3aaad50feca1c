"""How well does ``--sigma auto`` know σ? The estimator against scikit-image's wavelet one.

    python bench/sigma.py [--data ../shared/data] [--crop 128] [--sigmas 10,25,50] [--seed 1]

Each cbm3d9 image (centre crop of ``--crop`` px, 0: whole) gets N(0, σ²) noise on the 0–255
scale, clipped to [0, 1] and quantised to 8 bits as a PNG would be; prints a Markdown table of
both estimates and their relative errors, and the worst error per σ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.restoration import estimate_sigma

from deeprestore.io.images import read_image
from deeprestore.physics.noise import estimate_noise_sigma


def centre_crop(pixels: np.ndarray, side: int) -> np.ndarray:
    """The central ``side``×``side`` part of an (H, W, C) array (all of it for side 0)."""
    if side <= 0:
        return pixels
    top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
    return pixels[top:top + side, left:left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1].parent / "shared"
                        / "data")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigmas", default="10,25,50")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    worst = {s: [0.0, 0.0] for s in sigmas}
    print("| image | " + " | ".join(f"σ {s:g}: wavelet | σ {s:g}: ours" for s in sigmas) + " |")
    print("|---|" + "---|---|" * len(sigmas))
    for path in sorted((args.data / "cbm3d9").glob("*.png")):
        clean = centre_crop(read_image(path).pixels, args.crop)
        cells = []
        for sigma in sigmas:
            rng = np.random.default_rng(args.seed)
            noisy = np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1)
            noisy = np.round(noisy * 255) / 255
            wavelet = float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True)) * 255
            ours = estimate_noise_sigma(noisy)
            for k, value in enumerate((wavelet, ours)):
                error = 100 * (value - sigma) / sigma
                worst[sigma][k] = max(worst[sigma][k], abs(error))
                cells.append(f"{value:.1f} ({error:+.0f} %)")
        print(f"| {path.stem} | " + " | ".join(cells) + " |")
    print("| **worst \\|error\\|** | " + " | ".join(
        f"{w[0]:.1f} % | {w[1]:.1f} %" for w in worst.values()) + " |")


if __name__ == "__main__":
    main()
