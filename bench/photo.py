"""A photo with no knobs: ``deeprestore denoise photo.png`` timed, its PSNR measured afterwards.

    python bench/photo.py [--data ../shared/data] [--image kodim03] [--size 256] [--sigma 25]
        [--work DIR] [-- EXTRA CLI ARGS]

Cuts the centre ``--size``² of a cbm3d9 image, adds N(0, σ²) noise on the 0–255 scale, clips
and quantises it to an 8-bit PNG (as a camera file would be), then runs the command line on it
with no flags at all (σ estimated, the default method and preset, the default stop rule and
precision) in a fresh process, and prints its wall time, the lines it printed before the run
(σ estimate, cost), and the PSNR of its output against the clean crop — computed here, so the
run itself gets no reference. Arguments after ``--`` are appended to the command (to compare
a setting). The run's own output goes to ``WORK/run.log`` as it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.writers import write_image
from deeprestore.metrics import psnr_rgb


def photo_parser(doc: str) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """A parser with ``--data`` and ``--image`` (default kodim03), this process's arguments
    before ``--`` and the ones after it (passed on to ``deeprestore``)."""
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1].parent / "shared"
                        / "data")
    parser.add_argument("--image", default="kodim03")
    return parser, argv, extra


def main() -> None:
    parser, argv, extra = photo_parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="deeprestore-photo-"))
    pixels = read_image(args.data / "cbm3d9" / f"{args.image}.png").pixels
    top, left = (pixels.shape[0] - args.size) // 2, (pixels.shape[1] - args.size) // 2
    clean = pixels[top:top + args.size, left:left + args.size]
    rng = np.random.default_rng(args.seed)
    noisy = np.round(np.clip(clean + rng.normal(0, args.sigma / 255, clean.shape), 0, 1) * 255)
    write_image(work / "photo.png", Image(noisy / 255))
    command = [sys.executable, "-m", "deeprestore", "denoise", str(work / "photo.png"), "-o",
               str(work / "out"), "--no-compare", "--overwrite", *extra]
    tic = time.perf_counter()
    log = work / "run.log"  # the run's stderr as it goes (its progress), kept if it is killed
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=handle, text=True)
    wall = time.perf_counter() - tic
    printed = log.read_text(errors="replace")
    if done.returncode != 0:
        sys.exit(f"the run failed ({done.returncode}): {printed.strip()[-2000:]}")
    manifest = json.loads(next((work / "out").glob("photo_*.json")).read_text())
    restored = read_image(Path(manifest["output"])).pixels

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).permute(2, 0, 1)[None].float()

    psnr = float(psnr_rgb(tensor(restored), tensor(clean)))
    psnr_in = float(psnr_rgb(tensor(noisy / 255), tensor(clean)))
    print(" ".join(["deeprestore", *command[3:]]))
    for line in printed.splitlines():
        if "σ estimated" in line or "peak memory" in line:
            print("  " + line.strip())
    print(f"{args.image} {args.size}² σ {args.sigma:g}: {manifest['method']} "
          f"{manifest['iterations']} it (stopped_at {manifest.get('stopped_at')}), "
          f"precision {manifest['parameters']['precision']}, wall {wall / 60:.1f} min, "
          f"PSNR {psnr:.2f} dB (input {psnr_in:.2f})")


if __name__ == "__main__":
    main()
