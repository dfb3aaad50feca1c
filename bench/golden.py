"""Golden outputs: SHA-256 of the restored PNG and CSV log of a fixed set of tiny CPU runs.

Every task (denoise, deblur, superres, inpaint) × every method the CLI offers for it
(``deepred``, ``dip``, ``dip-tv``, ``red`` and the task's baselines) on a small crop of an image
of ``--data`` (shared/data), degraded by ``deeprestore degrade`` with seed 0, restored by the
CLI with its presets, ``--iters`` iterations (baselines: one), ``--seed 0``, ``--device cpu``,
``--precision float32`` (the default before ``auto``, which times the machine), one torch
thread (``OMP_NUM_THREADS=1``), the default synchronous execution. Each run is one
``python -m deeprestore`` process, so nothing carries over between runs.

The CSV hash leaves out the ``seconds`` column: wall time differs from run to run; everything
else of the log (iteration, loss, PSNR, gap, denoiser age, λ, µ) is hashed as written. The
manifests (JSON) are not hashed: they hold times, versions and paths.

Runs in :data:`NONDETERMINISTIC` are recorded but not compared: up to commit 24877d0, RED and
the one-shot ``bm3d`` baseline called the ``bm3d`` package with its automatic thread count (all
cores), whose aggregation order changes the last bits from run to run (the package says so):
over RED's iterations they reach the PNG of ``superres/red`` (three runs of the same code, three
hashes) and the loss in the CSV of ``denoise/bm3d``. The network methods gave the denoiser
torch's thread count (one here) and were reproducible; now every method does.

    python bench/golden.py --data ../shared/data -o golden.json          # record
    python bench/golden.py --data ../shared/data --compare golden.json   # check a change

Exit code 1 when ``--compare`` finds a run whose bytes differ.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

#: task → (image under --data, crop size of the clean image, degrade flags)
CASES = {
    "denoise": ("cbm3d9/house.png", 32, ["--sigma", "25"]),
    "deblur": ("cbm3d9/peppers.png", 32, ["--kernel", "uniform9"]),
    "superres": ("set5/butterfly.png", 48, ["--factor", "4"]),
    "inpaint": ("cbm3d9/house.png", 32, ["--mask", "random:0.5"]),
}
METHODS = {
    "denoise": ("deepred", "dip", "dip-tv", "red", "nlm", "bm3d"),
    "deblur": ("deepred", "dip", "dip-tv", "red", "wiener"),
    "superres": ("deepred", "dip", "dip-tv", "red", "bicubic"),
    "inpaint": ("deepred", "dip", "dip-tv", "red", "biharmonic"),
}
ITERATIVE = ("deepred", "dip", "dip-tv", "red")
#: runs that differ between two runs of the same code (see the module docstring)
NONDETERMINISTIC = ("superres/red", "denoise/bm3d")
TIMING_COLUMNS = ("seconds",)


def cli(*args: str) -> None:
    """``python -m deeprestore ARGS`` on one thread; raise with its stderr if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "deeprestore", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"deeprestore {' '.join(args)}: {done.stderr.strip()}")


def csv_hash(path: Path) -> str:
    """SHA-256 of the CSV rewritten without its timing columns."""
    rows = list(csv.reader(path.read_text().splitlines()))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] for i in keep])
    return hashlib.sha256(buffer.getvalue().encode()).hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(data: Path, iterations: int, work: Path, only: list[str] | None = None
           ) -> dict[str, dict[str, str]]:
    """Run every case (or those named ``task/method`` in ``only``); return
    {"task/method": {"png": sha, "csv": sha}}."""
    table: dict[str, dict[str, str]] = {}
    for task, (name, size, flags) in CASES.items():
        if only and not any(key.startswith(f"{task}/") for key in only):
            continue
        pixels = np.asarray(Image.open(data / name).convert("RGB"))
        top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
        clean = work / f"{task}_clean.png"
        Image.fromarray(pixels[top:top + size, left:left + size]).save(clean)
        degraded_dir = work / f"{task}_in"
        cli("degrade", str(clean), "-o", str(degraded_dir), "--task", task, "--seed", "0",
            "--quiet", *flags)
        observed = degraded_dir / clean.name
        for method in METHODS[task]:
            if only and f"{task}/{method}" not in only:
                continue
            out = work / f"{task}_{method}"
            args = [task, str(observed), "-o", str(out), "-m", method, "--reference",
                    str(clean), "--device", "cpu", "--seed", "0", "--quiet", "--no-compare"]
            if method in ITERATIVE:  # float32: ``auto`` would time the machine (issue 34)
                args += ["--iters", str(iterations), "--set", "log_every=2",
                         "--precision", "float32"]
            cli(*args)
            stem = f"{observed.stem}_{method}"
            table[f"{task}/{method}"] = {"png": file_hash(out / f"{stem}.png"),
                                         "csv": csv_hash(out / f"{stem}.csv")}
            print(f"{task}/{method}: {table[f'{task}/{method}']['png'][:12]} "
                  f"{table[f'{task}/{method}']['csv'][:12]}", flush=True)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="shared/data")
    parser.add_argument("--iters", type=int, default=12, help="iterations of iterative methods")
    parser.add_argument("-o", "--output", type=Path, help="write the table (JSON) here")
    parser.add_argument("--compare", type=Path, help="a table recorded before; exit 1 on change")
    parser.add_argument("--only", help="comma-separated task/method runs (default: all)")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else None
    with tempfile.TemporaryDirectory() as work:
        table = record(args.data, args.iters, Path(work), only)
    if args.output is not None:
        args.output.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    if only:
        before = {key: value for key, value in before.items() if key in only}
    keys = sorted(before.keys() | table.keys())
    changed = [key for key in keys
               if key not in NONDETERMINISTIC and before.get(key) != table.get(key)]
    for key in keys:
        verdict = ("not compared (nondeterministic)" if key in NONDETERMINISTIC
                   else "CHANGED" if key in changed else "identical")
        print(f"{key:24s} {verdict}")
    print(f"{len(changed)} of {len(keys) - len(NONDETERMINISTIC)} compared runs changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
