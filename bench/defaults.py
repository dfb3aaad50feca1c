"""The defaults judged on photos they were not tuned on (issue 43): held-out images, as a user's
files (PNG, JPEG at several qualities and chroma subsamplings), through the command line.

    PYTHONPATH=. python bench/defaults.py sigma [--crop 128] [--sigmas 5,10,25,50]
        [--formats png,95,85,75,85-444] [--images NAME,...] [--json PATH]
    PYTHONPATH=. python bench/defaults.py table --json PATH     (the Markdown table again)
    PYTHONPATH=. python bench/defaults.py estimates --json PATH (σ auto again on its JPEGs)

``sigma``: for every held-out image (:data:`HELD_OUT`; none of them is in cbm3d9, the set the
estimator was tuned on), σ and format: the centre crop gets N(0, σ²) noise (0–255 scale,
clipped, 8 bits), is saved as the format says (``png``; ``95``: JPEG quality 95, 4:2:0, as
imageio/Pillow save by default; ``85-444``: quality 85, 4:4:4) and restored by
``deeprestore denoise FILE --method bm3d`` in-process with ``--sigma auto`` (what a user
types) and with ``--sigma S`` for S over a sweep of 0.5–2× the noise the file holds
(std(decoded − clean)). Each case records the input's PSNR, σ auto's estimate, the PSNR of the
auto run and of the best swept σ. The table: per format and σ, how many cases are within 0.5 dB
of the best σ and how many fall below the input's PSNR.

``estimates``: the same files made again for the JPEG rows of a ``sigma`` JSON and σ auto read
with today's estimator: how far it moved from the recorded one (the BM3D runs are not redone).

The JSON is rewritten after every case (a stopped run keeps what it measured).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PilImage

from deeprestore.cli.main import main as cli_main
from deeprestore.io.images import read_image

#: held-out photos: shared/data's set14 (without cbm3d9's baboon, lenna, pepper), set5,
#: ncsr4 (without butterfly, in set5) and scikit-image's photos
HELD_OUT = ("set14/barbara", "set14/coastguard", "set14/comic", "set14/face", "set14/flowers",
            "set14/foreman", "set14/monarch", "set14/ppt3", "set14/zebra", "set5/baby",
            "set5/bird", "set5/head", "set5/woman", "ncsr4/leaves", "ncsr4/parrots",
            "ncsr4/starfish", "skimage/astronaut", "skimage/coffee", "skimage/chelsea")
SWEEP = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)


def clean_crop(name: str, data: Path, crop: int) -> np.ndarray:
    """The 8-bit centre crop (H, W, 3) float64 on 0–255 of held-out image ``name``."""
    folder, stem = name.split("/")
    if folder == "skimage":
        from skimage import data as skdata

        pixels = getattr(skdata, stem)().astype(np.float64) / 255
    else:
        pixels = read_image(data / folder / f"{stem}.png").pixels
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    top, left = (pixels.shape[0] - crop) // 2, (pixels.shape[1] - crop) // 2
    return np.round(pixels[top:top + crop, left:left + crop] * 255)


def save(noisy: np.ndarray, fmt: str, path: Path) -> np.ndarray:
    """Write ``noisy`` (0–255) as ``fmt`` at ``path``; return the pixels a reader gets back."""
    image = PilImage.fromarray(noisy.astype(np.uint8))
    if fmt == "png":
        image.save(path, format="PNG")
    else:
        quality, _, chroma = fmt.partition("-")
        image.save(path, format="JPEG", quality=int(quality),
                   subsampling=0 if chroma == "444" else 2)
    return np.asarray(PilImage.open(path).convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two 0–255 arrays."""
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def restore_bm3d(path: Path, reference: Path, sigma: str, out: Path) -> tuple[float, float]:
    """``deeprestore denoise PATH --method bm3d --sigma SIGMA``, in-process: (PSNR of the output
    against the reference, σ the run used)."""
    args = ["denoise", str(path), "--method", "bm3d", "--sigma", sigma, "--reference",
            str(reference), "-o", str(out), "-q", "--json", "--overwrite", "--threads", "1",
            "--no-compare"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.suppress(SystemExit):
        cli_main(args)
    manifest = json.loads(stdout.getvalue().strip().splitlines()[-1])
    return float(manifest["psnr"]), float(manifest["degradation"]["sigma"])


def sigma_part(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    names = args.images.split(",") if args.images else list(HELD_OUT)
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        for k, name in enumerate(names):
            clean = clean_crop(name, args.data, args.crop)
            reference = root / "clean.png"
            PilImage.fromarray(clean.astype(np.uint8)).save(reference)
            for sigma in args.sigmas:
                rng = np.random.default_rng(1000 * k + int(sigma))
                noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255)
                for fmt in args.formats:
                    path = root / f"noisy.{'png' if fmt == 'png' else 'jpg'}"
                    decoded = save(noisy, fmt, path)
                    residual = float(np.std(decoded - clean))
                    auto, estimate = restore_bm3d(path, reference, "auto", root / "out")
                    swept = {f"{s:g}": restore_bm3d(path, reference, f"{s * residual:.2f}",
                                                    root / "out")[0] for s in SWEEP}
                    best = max(swept.values())
                    row = {"image": name, "crop": args.crop, "sigma": sigma, "format": fmt,
                           "residual": round(residual, 3), "estimate": estimate,
                           "psnr_input": round(psnr(decoded, clean), 3), "psnr_auto": auto,
                           "psnr_best": best, "gap": round(best - auto, 3),
                           "sweep": swept}
                    rows.append(row)
                    print(f"{name} σ {sigma:g} {fmt}: input {row['psnr_input']:.2f} auto "
                          f"{auto:.2f} (σ {estimate:g}, residual {residual:.1f}) best "
                          f"{best:.2f}", flush=True)
                    if args.json:
                        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    table(rows)


def table(rows: list[dict[str, Any]]) -> None:
    """The Markdown table of the ``sigma`` rows."""
    print("| format | σ | cases | auto within 0.5 dB of the best σ | auto below the input | "
          "median gap dB | worst gap dB |\n|---|---|---|---|---|---|---|")
    keys = sorted({(r["format"], r["sigma"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for fmt, sigma in keys:
        part = [r for r in rows if (r["format"], r["sigma"]) == (fmt, sigma)]
        gaps = np.array([r["gap"] for r in part])
        below = sum(r["psnr_auto"] < r["psnr_input"] for r in part)
        print(f"| {fmt} | {sigma:g} | {len(part)} | {int((gaps <= 0.5).sum())} | {below} | "
              f"{np.median(gaps):.2f} | {gaps.max():.2f} |")
    gaps = np.array([r["gap"] for r in rows])
    below10 = sum(r["psnr_auto"] < r["psnr_input"] for r in rows if r["sigma"] >= 10)
    print(f"| all | | {len(rows)} | **{int((gaps <= 0.5).sum())}** "
          f"({100 * np.mean(gaps <= 0.5):.0f} %) | {below10} at σ ≥ 10 | "
          f"{np.median(gaps):.2f} | {gaps.max():.2f} |")


def estimates_part(args: argparse.Namespace) -> None:
    """The ``estimates`` part (module docstring)."""
    from deeprestore.physics.noise import estimate_noise_sigma

    rows = json.loads(args.json.read_text())["rows"]
    images = list(dict.fromkeys(r["image"] for r in rows))
    moved = []
    with tempfile.TemporaryDirectory() as work:
        for r in (r for r in rows if r["format"] != "png"):
            clean = clean_crop(r["image"], args.data, r["crop"])
            rng = np.random.default_rng(1000 * images.index(r["image"]) + int(r["sigma"]))
            noisy = np.clip(np.round(clean + rng.normal(0, r["sigma"], clean.shape)), 0, 255)
            decoded = save(noisy, r["format"], Path(work) / "noisy.jpg")
            now = estimate_noise_sigma(decoded / 255, compressed=True)
            moved.append((r["format"], now / r["estimate"] - 1))
            print(f"{r['image']} σ {r['sigma']:g} {r['format']}: {r['estimate']:g} -> {now:.2f}")
    for fmt in dict.fromkeys(f for f, _ in moved):
        change = np.array([c for f, c in moved if f == fmt])
        print(f"{fmt}: {len(change)} cases, change median {np.median(change):+.3f}, largest "
              f"{change[np.argmax(np.abs(change))]:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("sigma", "table", "estimates"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigmas", type=lambda t: [float(v) for v in t.split(",")],
                        default=[5.0, 10.0, 25.0, 50.0])
    parser.add_argument("--formats", type=lambda t: t.split(","),
                        default=["png", "95", "85", "75", "85-444"])
    parser.add_argument("--images", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.part == "table":
        table(json.loads(args.json.read_text())["rows"])
        return
    if args.part == "estimates":
        estimates_part(args)
        return
    sigma_part(args)


if __name__ == "__main__":
    sys.exit(main())
