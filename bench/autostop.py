"""How close does ``--iters auto`` stop to the PSNR peak? The variance rule against the oracle.

    python bench/autostop.py --out DIR [--data ../shared/data] [--images house,peppers]
        [--sigmas 15,25,50] [--methods dip,deepred] [--crop 128] [--runs 1] [--iters N]
        [--set KEY=VALUE ...] [--tag NAME]
    python bench/autostop.py --analyse DIR [--windows 50,100] [--patiences 200,500,1000]
        [--precision bf16]

The first form runs each (image, σ, method) of the ``denoise`` preset on a centre crop to the
preset's full count (the ceiling; ``--iters`` lowers it), logging at every iteration the PSNR of
the estimate against the clean crop and the moving variance of the network outputs for several
windows, and writes one JSON per run into DIR (nothing stops early, so one run serves every
window and patience; gzip them to keep them: ``--analyse`` reads ``*.json.gz`` too, e.g.
``bench/results/autostop-2026-12-02/``). The second form replays the rule offline on those
series: for every (W, P) the iteration where the run would have stopped, the PSNR of the
estimate it returns (at the detected minimum), the oracle peak PSNR of the same run, and the
iterations saved against the preset's count; one Markdown table per (W, P), a summary line.
``--set`` overrides a setting of the preset (e.g. ``net_channels=32``); ``--tag`` is added to
the file names so such runs sit beside the preset's. Noise: N(0, σ²) on the 0–255 scale,
clipped and quantised to 8 bits (a PNG), seed 1 + image index.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeprestore.arrays import Image
from deeprestore.config.presets import load_preset, parse_override
from deeprestore.io.images import read_image
from deeprestore.solvers.base import problem_to_device
from deeprestore.solvers.control import RunControl
from deeprestore.solvers.factory import make_algorithm
from deeprestore.solvers.runner import Runner
from deeprestore.solvers.stopping import VarianceStop
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import build_problem

WINDOWS = (25, 50, 100, 200)


class Recorder(VarianceStop):
    """A stopper that never stops: it records the variance signal of several windows."""

    def __init__(self, windows: tuple[int, ...]) -> None:
        super().__init__(max(windows), 1)
        self.rules = [VarianceStop(w, 10**9) for w in windows]
        self.series: dict[int, list[float | None]] = {w: [] for w in windows}

    def observe(self, iteration: int, output: torch.Tensor, estimate: Any) -> None:
        for rule in self.rules:
            rule.observe(iteration, output, lambda: output)
            self.series[rule.window].append(rule.signal)


def centre_crop(pixels: np.ndarray, side: int) -> np.ndarray:
    """The central ``side``×``side`` part of an (H, W, C) array."""
    top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
    return pixels[top:top + side, left:left + side]


def record(args: argparse.Namespace) -> None:
    preset = load_preset("denoise")
    paths = {p.stem: p for p in sorted((args.data / "cbm3d9").glob("*.png"))}
    args.out.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(args.images.split(",")):
        clean = centre_crop(read_image(paths[name]).pixels, args.crop)
        for sigma in (float(s) for s in args.sigmas.split(",")):
            rng = np.random.default_rng(1 + index)
            noisy = np.round(np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1)
                             * 255) / 255
            for method in args.methods.split(","):
                suffix = "" if args.precision == "float32" else f"_{args.precision}"
                suffix += f"_{args.tag}" if args.tag else ""
                target = args.out / f"{name}_s{sigma:g}_{method}{suffix}.json"
                if target.exists():
                    continue
                overrides: dict[str, Any] = {"log_every": 1, "runs": args.runs,
                                             "precision": args.precision}
                if args.iters:
                    overrides["iterations"] = args.iters
                overrides.update(parse_override(text) for text in args.set)
                settings = preset.settings_for(method, overrides)
                ceiling = preset.settings_for(method).iterations
                task = build_problem(TaskOptions("denoise", sigma=sigma), Image(noisy),
                                     Image(clean))
                problem = problem_to_device(task.problem, torch.device("cpu"))
                algorithm = make_algorithm(problem, settings, torch.device("cpu"))
                recorder = Recorder(WINDOWS)
                tic = time.perf_counter()
                result = Runner(algorithm, problem, 1, control=RunControl(),
                                stopper=recorder).run()
                seconds = time.perf_counter() - tic
                data = {"image": name, "sigma": sigma, "method": method, "crop": args.crop,
                        "precision": args.precision, "overrides": args.set,
                        "runs": args.runs, "iterations": settings.iterations,
                        "preset_iterations": ceiling, "seconds": round(seconds, 1),
                        "psnr": [round(row.psnr, 4) for row in result.log],
                        "signal": {str(w): [None if v is None else float(f"{v:.6g}") for v in s]
                                   for w, s in recorder.series.items()}}
                target.write_text(json.dumps(data))
                peak = max(data["psnr"])
                print(f"{name} σ{sigma:g} {method}: peak {peak:.2f} dB at "
                      f"{data['psnr'].index(peak) + 1}, end {data['psnr'][-1]:.2f}, "
                      f"{seconds:.0f} s", flush=True)


def replay(psnr: list[float], signal: list[float | None], patience: int,
           tolerance: float = 0.0) -> tuple[int, int]:
    """(stop iteration, detected iteration), 1-based, of the variance rule on one series (a
    new minimum must be ``tolerance`` (relative) below the best so far)."""
    best, best_at = float("inf"), 0
    for t, value in enumerate(signal, start=1):
        if value is None:
            continue
        if value < best * (1 - tolerance):
            best, best_at = value, t
        elif best_at and t - best_at >= patience:
            return t, best_at
    return len(signal), best_at or len(signal)


def analyse(args: argparse.Namespace) -> None:
    paths = sorted([*args.analyse.glob("*.json"), *args.analyse.glob("*.json.gz")])
    runs = [json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text())
            for p in paths]
    runs = [r for r in runs if r.get("precision", "float32") == args.precision]
    print(f"{len(runs)} runs from {args.analyse}\n")
    for window, patience, tolerance in itertools.product(
            (int(w) for w in args.windows.split(",")),
            (int(p) for p in args.patiences.split(",")),
            (float(t) for t in args.tolerances.split(","))):
        gaps, saved = [], []
        lines = ["| image | σ | method | peak (it) | auto stop: it, detected | PSNR returned "
                 "| below peak | saved |", "|---|---|---|---|---|---|---|---|"]
        for run in runs:
            psnr = run["psnr"]
            stop, detected = replay(psnr, run["signal"][str(window)], patience, tolerance)
            stopped = stop < len(psnr)
            returned = psnr[detected - 1] if stopped else psnr[-1]
            peak = max(psnr)
            gaps.append(peak - returned)
            saved.append(1 - stop / run["preset_iterations"])
            where = stop if stopped else f"ceiling {stop}"
            lines.append(
                f"| {run['image']} | {run['sigma']:g} | {run['method']} | {peak:.2f} "
                f"({psnr.index(peak) + 1}) | {where}, {detected} | "
                f"{returned:.2f} | {peak - returned:.2f} | {100 * saved[-1]:.0f} % |")
        print(f"### W = {window}, P = {patience}, tolerance {tolerance:g}: median "
              f"{statistics.median(gaps):.2f} dB, "
              f"worst {max(gaps):.2f} dB below the peak; iterations saved: median "
              f"{100 * statistics.median(saved):.0f} %\n")
        if args.tables:
            print("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1].parent / "shared"
                        / "data")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--analyse", type=Path)
    parser.add_argument("--images", default="house,peppers")
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--methods", default="dip,deepred")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--iters", type=int, default=0)
    parser.add_argument("--precision", default="float32", help="float32 or bf16 (network)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting over the preset's (repeatable)")
    parser.add_argument("--tag", default="", help="added to the recorded files' names")
    parser.add_argument("--windows", default="50,100")
    parser.add_argument("--patiences", default="200,500,1000")
    parser.add_argument("--tolerances", default="0", help="relative improvement a new minimum "
                        "needs, e.g. 0,0.01")
    parser.add_argument("--tables", action="store_true", help="per-run rows under each summary")
    args = parser.parse_args()
    if args.analyse is not None:
        analyse(args)
    elif args.out is not None:
        record(args)
    else:
        parser.error("give --out DIR (record) or --analyse DIR")


if __name__ == "__main__":
    main()
