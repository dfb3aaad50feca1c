"""How well does ``--sigma auto`` know σ? The estimator against scikit-image's wavelet one.

    python bench/sigma.py [--data ../shared/data] [--crop 128] [--sigmas 10,25,50] [--seed 1]
    python bench/sigma.py --jpeg [--crop 256] [--formats png,95,85,75,85-444]

Each cbm3d9 image (centre crop of ``--crop`` px, 0: whole) gets N(0, σ²) noise on the 0–255
scale, clipped to [0, 1] and quantised to 8 bits as a PNG would be; prints a Markdown table of
both estimates and their relative errors, and the worst error per σ. A format ``Q-444`` is a
JPEG of quality Q without chroma subsampling.

``--jpeg``: each noisy crop is also saved as JPEG at each quality of ``--formats`` (Pillow,
4:2:0) and read back; the target is then the residual noise std(decoded − clean), 0–255. Prints
per format and σ the median, lowest and highest ratio estimate / residual and how many cases
are within 20 %, for scikit-image's estimator, ours with the file's format known (a JPEG says
so) and ours deciding from the pixels.
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


def jpeg_table(data: Path, crop: int, sigmas: list[float], formats: list[str]) -> None:
    """The ``--jpeg`` table (module docstring)."""
    import io

    import imageio.v3 as iio
    from PIL import Image

    ratios: dict[str, dict[tuple[str, float], list[float]]] = {
        "scikit-image": {}, "ours (format known)": {}, "ours (detected)": {}}
    for k, path in enumerate(sorted((data / "cbm3d9").glob("*.png"))):
        clean = np.round(centre_crop(read_image(path).pixels, crop) * 255)
        for sigma in sigmas:
            rng = np.random.default_rng(1000 * k + int(sigma))
            noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255)
            for fmt in formats:
                buffer = io.BytesIO()
                if fmt == "png":
                    Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="PNG")
                else:  # QUALITY (4:2:0, Pillow's default) or QUALITY-444 (no subsampling)
                    quality, _, chroma = fmt.partition("-")
                    Image.fromarray(noisy.astype(np.uint8)).save(
                        buffer, format="JPEG", quality=int(quality),
                        subsampling=0 if chroma == "444" else 2)
                decoded = iio.imread(buffer.getvalue()).astype(np.float64)
                residual = float(np.std(decoded - clean))
                values = {
                    "scikit-image": float(estimate_sigma(decoded, channel_axis=-1,
                                                         average_sigmas=True)),
                    "ours (format known)": estimate_noise_sigma(decoded / 255,
                                                                compressed=fmt != "png"),
                    "ours (detected)": estimate_noise_sigma(decoded / 255)}
                for name, value in values.items():
                    ratios[name].setdefault((fmt, sigma), []).append(value / residual)
    for name, table in ratios.items():
        print(f"\n{name}: estimate / residual noise\n")
        print("| format | σ | median | lowest | highest | within 20 % |\n|---|---|---|---|---|---|")
        every = []
        for (fmt, sigma), values in table.items():
            r = np.array(values)
            every += values
            print(f"| {fmt} | {sigma:g} | {np.median(r):.2f} | {r.min():.2f} | {r.max():.2f} | "
                  f"{int((abs(r - 1) <= 0.2).sum())}/{len(r)} |")
        r = np.array(every)
        print(f"| all | | {np.median(r):.2f} | {r.min():.2f} | {r.max():.2f} | "
              f"**{int((abs(r - 1) <= 0.2).sum())}/{len(r)}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1].parent / "shared"
                        / "data")
    parser.add_argument("--crop", type=int, default=None, help="128 (256 with --jpeg)")
    parser.add_argument("--sigmas", default="10,25,50")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jpeg", action="store_true", help="PNG and JPEG files (module doc)")
    parser.add_argument("--formats", default="png,95,85,75")
    args = parser.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    if args.jpeg:
        jpeg_table(args.data, args.crop or 256, sigmas, args.formats.split(","))
        return
    args.crop = args.crop or 128
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
