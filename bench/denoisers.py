"""Time every denoiser side by side and measure its PSNR against the clean image, in one run.

    python bench/denoisers.py [--device cpu|cuda] [--sizes 256,512,1024] [--sigma 25]
                              [--repeats 3] [--denoisers nlm,nlm-torch,bm3d,bm3d-torch]
                              [--reference-repeats N] [--no-reference-warmup] [--json PATH]

The test image is scikit-image's ``astronaut`` (512×512 RGB), resized to each size, with Gaussian
noise of σ (0–255 scale, fixed seed). Times are the median of ``--repeats`` calls after one
warm-up call (CUDA calls are synchronised). Reference denoisers (``nlm``, ``bm3d``) always run on
the CPU; the torch ones on ``--device``; ``--reference-repeats`` and ``--no-reference-warmup``
shorten the slow CPU ones (``bench/gpu_check.sh``). A denoiser that cannot run (the ``bm3d``
package missing, say) gets a row with its ``error`` and the next one runs; ``--json`` is
rewritten after every row, so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from deeprestore.denoisers import get_denoiser
from deeprestore.metrics import psnr_rgb


def test_image(size: int, sigma: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and noisy (1, 3, size, size) images in [0, 1]."""
    from skimage import data
    from skimage.transform import resize

    clean = resize(data.astronaut() / 255.0, (size, size), anti_aliasing=True)
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, sigma / 255.0, clean.shape), 0, 1)

    def to(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None]

    return to(clean), to(noisy)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_denoiser(
    name: str, noisy: torch.Tensor, sigma: float, device: torch.device, repeats: int,
    warmup: bool = True,
) -> tuple[float, torch.Tensor]:
    """Median seconds of one call (after one warm-up call if ``warmup``), and the output (on
    the CPU)."""
    denoiser = get_denoiser(name)
    where = device if denoiser.device_kind == "any" else torch.device("cpu")
    x = noisy.to(where)
    if warmup:
        denoiser(x, sigma)
        _sync(where)
    times = []
    out = x
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        out = denoiser(x, sigma)
        _sync(where)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--denoisers", default="nlm,nlm-torch,bm3d,bm3d-torch")
    parser.add_argument("--reference-repeats", type=int, default=None,
                        help="calls timed of the CPU reference denoisers (default: --repeats)")
    parser.add_argument("--no-reference-warmup", action="store_true",
                        help="no warm-up call for the CPU reference denoisers")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.denoisers.split(",")
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        clean, noisy = test_image(size, args.sigma)
        base = float(psnr_rgb(noisy, clean))
        for name in names:
            row: dict[str, Any] = {"size": size, "denoiser": name, "psnr_noisy": base}
            try:
                reference = get_denoiser(name).device_kind == "cpu"
                row["device"] = "cpu" if reference else str(device)
                repeats = args.reference_repeats if reference else None
                seconds, out = time_denoiser(name, noisy, args.sigma, device,
                                             repeats or args.repeats,
                                             warmup=not (reference and args.no_reference_warmup))
                row.update({"seconds": seconds, "psnr": float(psnr_rgb(out, clean))})
            except Exception as err:  # noqa: BLE001 - a missing package: recorded, next one
                row["error"] = f"{type(err).__name__}: {err}"
            rows.append(row)
            print(f"{size} {name}: " + (row.get("error") or f"{row['seconds']:.4f} s, "
                                                           f"{row['psnr']:.2f} dB"), flush=True)
            if args.json:  # after every row, so a run cut short keeps what it measured
                _write_json(args.json, {"torch": torch.__version__, "device": str(device),
                                        "sigma": args.sigma, "rows": rows})
    table = Table(title=f"denoisers, σ = {args.sigma:g} (torch {torch.__version__})")
    for col in ("size", "denoiser", "device", "s / call", "PSNR dB", "noisy dB"):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(str(r["size"]), r["denoiser"], r.get("device", "?"), r["error"], "",
                          f"{r['psnr_noisy']:.2f}")
            continue
        table.add_row(str(r["size"]), r["denoiser"], r["device"], f"{r['seconds']:.4f}",
                      f"{r['psnr']:.2f}", f"{r['psnr_noisy']:.2f}")
    Console().print(table)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
