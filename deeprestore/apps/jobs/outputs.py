"""A finished job's outputs: the restored image, its CSV log, the comparison picture and the
manifest, written all or nothing."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deeprestore import __version__
from deeprestore.apps.jobs.job import Job
from deeprestore.apps.jobs.prepare import Prepared
from deeprestore.arrays import Image, to_array
from deeprestore.io.manifest import Manifest
from deeprestore.io.writers import write_csv, write_image
from deeprestore.metrics import ssim
from deeprestore.solvers.base import Result


@dataclass(frozen=True)
class RunRecord:
    """How a job ran, besides its result: wall ``seconds``; the ``tiling`` record and each log
    row's tile (tiled runs); how many problems stepped together (grouped runs)."""

    seconds: float
    tiling: dict[str, Any] | None = None
    row_tiles: list[int] | None = None
    grouped_with: int | None = None


def finish(job: Job, prepared: Prepared, result: Result, run: RunRecord) -> Manifest:
    """Write ``result``'s image, CSV, comparison and manifest, all or nothing; return the
    manifest."""
    observed = prepared.observed
    pixels = to_array(result.image)
    same_size = pixels.shape[:2] == observed.pixels.shape[:2]
    restored = Image(pixels, observed.bit_depth, observed.alpha if same_size else None)
    manifest = build_manifest(job, prepared, result, run, restored)
    outputs = job.outputs()
    written: list[Path] = []
    try:  # all or nothing: a failure part-way (full disk, Ctrl-C) removes what this run wrote
        write_image(outputs["image"], restored)
        written.append(outputs["image"])
        write_csv(outputs["csv"], result.log, run.row_tiles)
        written.append(outputs["csv"])
        if job.compare:
            _write_compare(job, prepared, restored, manifest)
            written.append(job.compare_path())
        manifest.write(outputs["json"])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    job.failure_path().unlink(missing_ok=True)
    job.checkpoint_path().unlink(missing_ok=True)
    return manifest


def build_manifest(job: Job, prepared: Prepared, result: Result, run: RunRecord,
                   restored: Image) -> Manifest:
    """The manifest of ``job``'s run: inputs, parameters, what happened, PSNR/SSIM against the
    reference (when there is one), versions."""
    task_problem, resume = prepared.task_problem, prepared.resume
    outputs = job.outputs()
    psnr = psnr_input = ssim_value = None
    problem = task_problem.problem
    if problem.reference is not None and problem.psnr is not None:
        ref = problem.reference
        psnr = float(problem.psnr(result.image, ref))
        ssim_value = ssim(result.image, ref, task_problem.protocol)
        psnr_input = float(problem.psnr(problem.x_init, ref))
    return Manifest(
        input=str(job.input), output=str(outputs["image"]), log=str(outputs["csv"]),
        task=job.task.task, method=job.method, preset=job.preset,
        degradation=task_problem.info, parameters=job.settings.to_dict(),
        precision=prepared.precision or result.precision, denoiser=result.denoiser,
        denoiser_calls=result.denoiser_calls, seed=job.settings.seed, device=str(job.device),
        iterations=result.iterations,
        stopped_at=None if result.stop is None else result.stop["stopped_at"],
        stop=result.stop, tiling=run.tiling, grouped_with=run.grouped_with,
        seconds=round(run.seconds, 3),
        resumed_from=None if resume is None else resume["algorithm"]["iteration"],
        rollbacks=result.rollbacks, backtracks=result.backtracks,
        psnr_protocol=task_problem.protocol,
        reference=str(job.reference) if job.reference is not None else None,
        psnr=psnr, psnr_input=psnr_input, ssim=ssim_value,
        size={"width": restored.width, "height": restored.height,
              "channels": restored.channels, "bit_depth": restored.bit_depth},
        started=prepared.started.isoformat(timespec="seconds"), command=job.command,
        versions={"deeprestore": __version__, "torch": torch.__version__,
                  "python": platform.python_version()},
        compare=str(job.compare_path()) if job.compare else None,
    )


def _write_compare(job: Job, prepared: Prepared, restored: Image, manifest: Manifest) -> None:
    """The side-by-side picture: input | restored | reference, PSNR in the titles."""
    from deeprestore.io.plots import compare_image

    def title(name: str, value: float | None) -> str:
        return name if value is None else f"{name}\n{value:.2f} dB"

    panels = [(title("input", manifest.psnr_input), prepared.observed.pixels),
              (title(job.method, manifest.psnr), restored.pixels)]
    if prepared.reference is not None:
        panels.append(("reference", prepared.reference.pixels))
    compare_image(panels, job.compare_path())
