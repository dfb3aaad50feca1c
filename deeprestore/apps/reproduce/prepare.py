"""Preparing a table's images: each clean image degraded as the paper did (fixed seed per
image) into ``OUT/TABLE/IMAGE/`` — ``clean.png``, ``input.png``, ``mask.png`` (inpainting) and
``input.json`` (the degradation record and the input's own PSNR/SSIM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deeprestore import __version__
from deeprestore.apps.degrade import degrade_pixels
from deeprestore.apps.reproduce.benchmarks import Benchmark, ImageEntry
from deeprestore.apps.reproduce.events import ReproduceError
from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.manifest import read_json_object
from deeprestore.io.writers import write_image, write_json
from deeprestore.metrics import ssim
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import build_problem
from deeprestore.tasks.registry import INPAINT, SUPERRES


def _centre_crop(pixels: np.ndarray, side: int) -> tuple[np.ndarray, list[int]]:
    """The centre ``side``×``side`` crop (smaller sides are kept whole); box [top, left, h, w]."""
    height, width = min(side, pixels.shape[0]), min(side, pixels.shape[1])
    top, left = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
    return pixels[top : top + height, left : left + width], [top, left, height, width]


def normalised(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples → lists), for comparisons with files."""
    return json.loads(json.dumps(data))


def task_options(bench: Benchmark, record: dict[str, Any], image_dir: Path) -> TaskOptions:
    """The task options that restore the image degraded as ``record`` says (in ``image_dir``)."""
    return TaskOptions(
        bench.task,
        sigma=record["sigma"],
        kernel=record.get("kernel"),
        factor=record.get("factor"),
        downsampler=record.get("downsampler"),
        mask=str(image_dir / "mask.png") if bench.task == INPAINT.name else None,
    )


def prepare_image(
    bench: Benchmark, entry: ImageEntry, data: Path, image_dir: Path, *, quick: bool, seed: int,
    force: bool,
) -> tuple[dict[str, Any], bool]:
    """Degrade one image into ``image_dir`` unless it is there already with the same record.

    Returns the degradation record and whether the inputs were (re)written — then every
    method's earlier output for this image is stale.
    """
    source = read_image(data / entry.set / entry.file)
    clean = source.pixels
    quick_crop = None
    if quick:
        clean, quick_crop = _centre_crop(clean, bench.crop)
    degradation = bench.degradation
    degraded = degrade_pixels(
        clean, bench.task, sigma=degradation.get("sigma"), kernel=degradation.get("kernel"),
        factor=degradation.get("factor"), mask=degradation.get("mask"), seed=seed + entry.index,
    )
    if bench.task == SUPERRES.name:  # the reference is the HR crop that was downscaled
        top, left, height, width = degraded.params["crop"]
        clean = clean[top : top + height, left : left + width]
    record = normalised({
        "table": bench.name, "set": entry.set, "image": entry.name, "source": entry.relative,
        "source_size": [source.height, source.width], "quick_crop": quick_crop,
        "downsampler": degradation.get("downsampler"), **degraded.params,
    })
    paths = {"clean": image_dir / "clean.png", "input": image_dir / "input.png",
             "record": image_dir / "input.json"}
    if bench.task == INPAINT.name:
        paths["mask"] = image_dir / "mask.png"
    previous = read_json_object(paths["record"])
    if (not force and previous is not None and previous.get("degradation") == record
            and all(p.exists() for p in paths.values())):
        return record, False
    image_dir.mkdir(parents=True, exist_ok=True)
    write_image(paths["clean"], Image(clean, source.bit_depth))
    # 8-bit PNG: the jobs read files, so the paper's float inputs are quantised (results.md)
    write_image(paths["input"], Image(degraded.image, 8))
    if degraded.mask is not None:
        write_image(paths["mask"], Image(degraded.mask[:, :, None]))
    options = task_options(bench, record, image_dir)
    problem = build_problem(options, read_image(paths["input"]), read_image(paths["clean"]))
    start, reference = problem.problem.x_init, problem.problem.reference
    if reference is None or problem.problem.psnr is None:  # pragma: no cover - always set
        raise ReproduceError(f"{entry.relative}: no reference to measure the input against")
    write_json(paths["record"], {
        "degradation": record,
        "psnr_protocol": problem.protocol,
        "psnr": float(problem.problem.psnr(start, reference)),
        "ssim": ssim(start, reference, problem.protocol),
        "deeprestore": __version__,
    })
    return record, True
