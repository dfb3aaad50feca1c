"""DeepRED and DIP through a user's operator: a 3×3 box blur then a fixed 50 % pixel mask.

    PYTHONPATH=. python bench/operator_case.py [--case blur-mask|fourier] [--size 64]
        [--iters 1000] [--runs deepred,dip,deepred:task=denoise,...]

The case of issue 45 (``--case blur-mask``, the default): the centre-left ``--size``² crop of
scikit-image's astronaut (row 100, column 180), H = circular 3×3 box blur then a fixed random
mask keeping half the pixels (seed 1), noise N(0, 0.02²) (seed 2), through
``deeprestore.restore(y, operator=H, ...)`` with ``--iters`` iterations, seed 0, NLM as DeepRED's
f; each ``--runs`` entry is a method and
optional ``key=value`` restore arguments (``task=denoise`` picks that task's preset).
``--case fourier``: examples/fourier_sampling.py's 25 % of the DFT of the camera crop, no noise,
DeepRED's f at σ_f 5. Prints the PSNR of Hᵀy and each run's PSNR, time and preset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from operator_cases import blur_and_mask, fourier_sampling, psnr  # noqa: E402

CASES = {"blur-mask": blur_and_mask, "fourier": fourier_sampling}

import deeprestore  # noqa: E402


def run(spec: str, size: int, iterations: int, case: str = "blur-mask"
        ) -> tuple[float, float, str]:
    """One ``--runs`` entry: (PSNR dB, seconds, preset)."""
    operator, clean, y = CASES[case](size)
    method, _, extra = spec.partition(":")
    options: dict[str, Any] = dict(item.split("=", 1) for item in extra.split(",") if item)
    if case == "fourier":  # noise-free; the example's f at σ_f 5; the image's shape
        options.update(sigma=0, shape=(1, 1, size, size),
                       **({"sigma_f": 5.0} if method == "deepred" else {}))
    else:
        options.setdefault("sigma", 0.02 * 255)
    tic = time.perf_counter()
    done = deeprestore.restore(y, method=method, operator=operator, iterations=iterations,
                               seed=0, **options,
                               **({"denoiser": "nlm"} if method == "deepred" else {}))
    return psnr(done.image, clean), time.perf_counter() - tic, done.preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=tuple(CASES), default="blur-mask",
                        help="fourier: examples/fourier_sampling.py's 25 %% of the DFT, no noise")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--runs", default="deepred,dip,deepred:task=denoise")
    args = parser.parse_args()
    torch.set_num_threads(1)
    operator, clean, y = CASES[args.case](args.size)
    seen = operator.adjoint(y)[0].permute(1, 2, 0).numpy()  # Hᵀy (the observation itself here)
    print(f"Hᵀy {psnr(seen[:, :, 0] if clean.ndim == 2 else seen, clean):.2f} dB")
    for spec in args.runs.split(","):
        value, seconds, preset = run(spec, args.size, args.iters, args.case)
        print(f"{spec}: {value:.2f} dB, {seconds:.0f} s, preset {preset}", flush=True)


if __name__ == "__main__":
    main()
