"""Does BM3D given the PSD of a JPEG's left-over noise beat white-noise BM3D?

    python bench/jpeg_bm3d.py [--data ../shared/data] [--images all] [--crop 256]
        [--sigmas 10,25,50] [--qualities 95,85,75] [--json out.json]
        [--deepred ITERATIONS]

Test cases as ``bench/sigma.py --jpeg`` makes them: each cbm3d9 image (centre crop of
``--crop`` px), N(0, σ²) noise on the 0–255 scale (seed 1000·k + σ, k the image's index in
the sorted folder), clipped and rounded to 8 bits, saved by Pillow as JPEG at each quality
(4:2:0) and decoded. Compared by PSNR against the clean crop, all single-threaded:

* ``input``: the decoded JPEG;
* ``white@est``: CBM3D (``bm3d_package``) at ``estimate_noise_sigma(compressed=True)``, as the
  tool does today;
* ``white@oracle``: the same at the true left-over std(decoded − clean);
* ``psd``: the denoiser ``bm3d-jpeg`` (:func:`~deeprestore.denoisers.correlated.jpeg_bm3d`,
  what ``--method bm3d`` runs on a JPEG file) at the estimated σ: BM3D given the PSD of
  :func:`~deeprestore.physics.jpeg_noise.jpeg_noise_psd` (the file's tables, white@est as the
  proxy clean image).

``--deepred N``: instead, DeepRED (the photo defaults, ``--denoiser bm3d``, N iterations, no
automatic stop) with white BM3D and with ``bm3d-jpeg`` as f, on the same files.

Prints a Markdown table of mean PSNR per (σ, quality), the mean, lowest and highest gain of
``psd`` over ``white@est`` and the mean seconds of each step per image.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.sigma import centre_crop
from deeprestore.arrays import to_tensor
from deeprestore.config.resolve import SettingsResolver
from deeprestore.denoisers import get_denoiser
from deeprestore.denoisers.correlated import jpeg_bm3d
from deeprestore.denoisers.reference import bm3d_package
from deeprestore.io.images import read_image, read_jpeg_tables
from deeprestore.physics.noise import estimate_noise_sigma
from deeprestore.physics.operators import Identity
from deeprestore.solvers.base import Problem
from deeprestore.solvers.runner import restore
from deeprestore.tasks.options import TaskOptions

METHODS = ("input", "white@est", "white@oracle", "psd")
DEEPRED_METHODS = ("input", "deepred-white", "deepred-psd")


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (dB) of a 0–1 estimate against a 0–255 clean image."""
    error = np.mean((np.clip(estimate, 0, 1) * 255 - clean) ** 2)
    return float(10 * np.log10(255**2 / error))


def white_bm3d(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """The project's CBM3D (``bm3d_package``, one thread) of an (H, W, 3) 0–1 image."""
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pixels, -1, 0)))[None]
    return np.moveaxis(bm3d_package(tensor, sigma, threads=1)[0].numpy(), 0, -1)


def jpeg_case(clean: np.ndarray, sigma: float, quality: int, seed: int) -> bytes:
    """The JPEG file of ``bench/sigma.py --jpeg`` for a 0–255 clean crop."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def run_case(clean: np.ndarray, data: bytes) -> dict[str, float]:
    """PSNR of each method, the σ used and the seconds of each step for one file."""
    import imageio.v3 as iio

    decoded = iio.imread(data).astype(np.float64)
    pixels = decoded / 255
    row: dict[str, float] = {"input": psnr(pixels, clean)}
    row["sigma_est"] = estimate_noise_sigma(pixels, compressed=True)
    row["sigma_oracle"] = float(np.std(decoded - clean))
    start = time.perf_counter()
    row["white@est"] = psnr(white_bm3d(pixels, row["sigma_est"]), clean)
    row["time_white"] = time.perf_counter() - start
    row["white@oracle"] = psnr(white_bm3d(pixels, row["sigma_oracle"]), clean)
    start = time.perf_counter()
    denoiser = jpeg_bm3d(pixels, read_jpeg_tables(io.BytesIO(data)))
    out = denoiser(to_tensor(pixels).double(), row["sigma_est"], threads=1)
    row["psd"] = psnr(np.moveaxis(out[0].numpy(), 0, -1), clean)
    row["time_psd"] = time.perf_counter() - start  # its own white pass, the PSD, BM3D
    return row


def deepred_case(clean: np.ndarray, data: bytes, iterations: int) -> dict[str, float]:
    """PSNR of DeepRED with white BM3D and with ``bm3d-jpeg`` as f on one file."""
    import imageio.v3 as iio

    pixels = iio.imread(data).astype(np.float64) / 255
    sigma = estimate_noise_sigma(pixels, compressed=True)
    resolver = SettingsResolver("denoise", "deepred", {"iterations": iterations,
                                                       "stop": "fixed"}, "bm3d",
                                torch.device("cpu"), everyday=True)
    _, settings, _ = resolver.resolve(TaskOptions(task="denoise", sigma=sigma), None)
    y = to_tensor(pixels)
    row: dict[str, float] = {"input": psnr(pixels, clean), "sigma_est": sigma}
    for name, denoiser in (("deepred-white", get_denoiser("bm3d")),
                           ("deepred-psd", jpeg_bm3d(pixels, read_jpeg_tables(io.BytesIO(data))))):
        start = time.perf_counter()
        result = restore(Problem(y, Identity(), y.clone(), sigma), settings, denoiser=denoiser)
        row[name] = psnr(np.moveaxis(result.image[0].double().numpy(), 0, -1), clean)
        row[f"time_{name}"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1].parent / "shared"
                        / "data")
    parser.add_argument("--images", default="all", help="comma-separated stems, or all")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--sigmas", default="10,25,50")
    parser.add_argument("--qualities", default="95,85,75")
    parser.add_argument("--deepred", type=int, default=0, metavar="ITERATIONS",
                        help="compare DeepRED with either BM3D as f (module docstring)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    qualities = [int(q) for q in args.qualities.split(",")]
    paths = sorted((args.data / "cbm3d9").glob("*.png"))
    wanted = None if args.images == "all" else set(args.images.split(","))
    methods = DEEPRED_METHODS if args.deepred else METHODS
    better, worse = methods[-1], methods[1]
    rows = []
    for k, path in enumerate(paths):
        if wanted is not None and path.stem not in wanted:
            continue
        clean = np.round(centre_crop(read_image(path).pixels, args.crop) * 255)
        for sigma in sigmas:
            for quality in qualities:
                data = jpeg_case(clean, sigma, quality, 1000 * k + int(sigma))
                case = (deepred_case(clean, data, args.deepred) if args.deepred
                        else run_case(clean, data))
                row = {"image": path.stem, "sigma": sigma, "quality": quality, **case}
                rows.append(row)
                print(f"{path.stem} σ {sigma:g} q {quality}: " + ", ".join(
                    f"{m} {row[m]:.2f}" for m in methods), flush=True)
    print("\n| σ | quality | " + " | ".join(methods) + f" | gain {better} − {worse} |")
    print("|---|---|" + "---|" * (len(methods) + 1))
    cells = []
    for sigma in sigmas:
        for quality in qualities:
            cell = [r for r in rows if r["sigma"] == sigma and r["quality"] == quality]
            if not cell:
                continue
            means = {m: float(np.mean([r[m] for r in cell])) for m in methods}
            means["gain"] = means[better] - means[worse]
            cells.append({"sigma": sigma, "quality": quality, **means})
            print(f"| {sigma:g} | {quality} | " + " | ".join(f"{means[m]:.2f}" for m in methods)
                  + f" | {means['gain']:+.2f} |")
    gains = np.array([r[better] - r[worse] for r in rows])
    times = {t: float(np.mean([r[t] for r in rows])) for t in rows[0] if t.startswith("time_")}
    summary = {"mean_gain": float(gains.mean()), "min_gain": float(gains.min()),
               "max_gain": float(gains.max()), "cases": len(rows), **times}
    print(f"\n{better} − {worse}: mean {summary['mean_gain']:+.3f} dB, lowest "
          f"{summary['min_gain']:+.3f}, highest {summary['max_gain']:+.3f} ({len(rows)} cases)")
    print("mean seconds per image: " + ", ".join(f"{k[5:]} {v:.1f}" for k, v in times.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "cases": rows, "cells": cells, "summary": summary},
                                        indent=1))


if __name__ == "__main__":
    main()
