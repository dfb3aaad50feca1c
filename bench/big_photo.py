"""A 12-megapixel JPEG: how soon the cost line appears, and whether a crop's time scales.

    python bench/big_photo.py [--data ../shared/data] [--image kodim03] [--width 4000]
        [--height 3000] [--sigma 15] [--quality 90] [--work DIR] [-- EXTRA CLI ARGS]
    python bench/big_photo.py --linearity [--sides 512,1024,1536] [--json FILE]

Default: enlarges a cbm3d9 image to ``--width``×``--height`` (bicubic), adds N(0, σ²) noise
on the 0–255 scale, saves it as a JPEG of ``--quality`` (Pillow, 4:2:0), then runs
``deeprestore denoise photo.jpg --max-minutes 1`` in a fresh process and prints each line it
writes with the seconds since the start — the figure wanted is when the cost line (the
estimate, or the refusal naming what fits) appears.

``--linearity``: the step time the estimate reports for the photo defaults (``deepred``, the
``[everyday]`` network, NLM) on square crops of each side, measured two ways in one process:
on the :data:`~deeprestore.solvers.timing.TIME_PROBE_SIDE`² centre crop scaled by the pixel
count (what the estimate does), and at the real size; their ratio per side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize

from bench.photo import photo_parser
from deeprestore.arrays import to_tensor
from deeprestore.config.resolve import SettingsResolver
from deeprestore.io.images import read_image
from deeprestore.physics.operators import Identity
from deeprestore.solvers import cost, memory, timing
from deeprestore.solvers.base import Problem
from deeprestore.tasks.options import TaskOptions


def make_photo(data: Path, image: str, width: int, height: int, sigma: float, quality: int,
               path: Path) -> None:
    """The enlarged, noisy JPEG (module docstring)."""
    import imageio.v3 as iio

    clean = read_image(data / "cbm3d9" / f"{image}.png").pixels * 255
    big = resize(clean, (height, width), order=3, preserve_range=True, anti_aliasing=False)
    noisy = big + np.random.default_rng(0).normal(0, sigma, big.shape)
    iio.imwrite(path, np.clip(noisy, 0, 255).round().astype(np.uint8), quality=quality)


def time_cost_line(photo: Path, work: Path, extra: list[str]) -> None:
    """Run the command line on ``photo``; print its lines with their times."""
    command = [sys.executable, "-m", "deeprestore", "denoise", str(photo), "--max-minutes",
               "1", "-o", str(work / "out"), "--overwrite", *extra]
    print("$", " ".join(command[1:]), flush=True)
    tic = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(f"[{time.perf_counter() - tic:6.1f} s] {line}", end="", flush=True)
    print(f"[{time.perf_counter() - tic:6.1f} s] exit {process.returncode}")


def linearity(data: Path, image: str, sides: list[int]) -> list[dict[str, float]]:
    """Sampled vs real-size step and denoiser times of the photo defaults (module doc)."""
    device = torch.device("cpu")
    resolver = SettingsResolver("denoise", "deepred", {}, "auto", device, everyday=True)
    _, settings, _ = resolver.resolve(TaskOptions(task="denoise", sigma=25.0), None)
    clean = read_image(data / "cbm3d9" / f"{image}.png").pixels
    rows = []
    probe_side = timing.TIME_PROBE_SIDE
    for side in sides:
        big = resize(clean, (side, side), order=3, anti_aliasing=False)
        noisy = np.clip(big + np.random.default_rng(0).normal(0, 25 / 255, big.shape), 0, 1)
        y = to_tensor(noisy)
        problem = Problem(y, Identity(), y.clone(), 25.0)
        row: dict[str, float] = {"side": side}
        for name, probe in (("sampled", probe_side), ("real", 10**6)):
            timing.TIME_PROBE_SIDE = probe
            model = memory.MemoryModel(0.0, 0.0, 0)
            tic = time.perf_counter()
            estimate = cost._timed_estimate(cost.CostRequest(problem, settings, device), model,
                                            None)
            row[f"{name}_s_per_it"] = estimate.seconds_per_iteration
            row[f"{name}_denoiser_s"] = estimate.denoiser_seconds
            row[f"{name}_estimate_s"] = time.perf_counter() - tic
        timing.TIME_PROBE_SIDE = probe_side
        row["step_ratio"] = row["sampled_s_per_it"] / row["real_s_per_it"]
        row["denoiser_ratio"] = row["sampled_denoiser_s"] / row["real_denoiser_s"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser, argv, extra = photo_parser(__doc__)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--sigma", type=float, default=15.0)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--linearity", action="store_true", help="module docstring")
    parser.add_argument("--sides", default="512,1024,1536")
    parser.add_argument("--json", type=Path, default=None, help="--linearity's rows")
    args = parser.parse_args(argv)
    if args.linearity:
        rows = linearity(args.data, args.image, [int(s) for s in args.sides.split(",")])
        if args.json is not None:
            args.json.write_text(json.dumps({"probe_side": timing.TIME_PROBE_SIDE,
                                             "threads": torch.get_num_threads(),
                                             "torch": torch.__version__, "rows": rows},
                                            indent=1) + "\n")
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="deeprestore-big-"))
    work.mkdir(parents=True, exist_ok=True)
    photo = work / "photo.jpg"
    make_photo(args.data, args.image, args.width, args.height, args.sigma, args.quality, photo)
    time_cost_line(photo, work, extra)


if __name__ == "__main__":
    main()
