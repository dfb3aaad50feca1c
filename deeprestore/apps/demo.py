"""``deeprestore demo``: denoise a bundled image end to end and show the result.

Takes a 64×64 crop of scikit-image's ``astronaut`` (public domain, shipped with scikit-image),
adds Gaussian noise of σ = 25 (0–255 scale, fixed seed), restores it with DeepRED using the
``denoise-quick`` preset and writes, under the output directory: ``clean.png``, ``noisy.png``,
``noisy_deepred.png`` (restored), its CSV log and JSON manifest, and ``compare.png``
(noisy | restored | clean side by side).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from deeprestore.apps.jobs import Job, run_job
from deeprestore.arrays import Image
from deeprestore.config.presets import load_preset
from deeprestore.io.images import read_image
from deeprestore.io.manifest import Manifest
from deeprestore.io.writers import write_image
from deeprestore.solvers.base import ProgressCallback
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.registry import DENOISE

DEMO_PRESET = "denoise-quick"
DEMO_SIGMA = 25.0
DEMO_CROP = (slice(40, 104), slice(200, 264))  # the astronaut's face and helmet edge

#: Shows one run's progress: called with a description and the run's iterations, it opens a
#: display for the duration of a ``with`` block and yields the engine's callback that moves it
#: (the command line passes its progress bar, :func:`deeprestore.cli.progress.run_progress`).
ProgressDisplay = Callable[[str, int], AbstractContextManager[ProgressCallback]]


def demo_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The clean crop and its noisy version, (64, 64, 3) float64 in [0, 1]."""
    from skimage import data

    clean = data.astronaut()[DEMO_CROP].astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0.0, DEMO_SIGMA / 255.0, clean.shape), 0.0, 1.0)
    return clean, noisy


def run_demo(
    output: Path,
    *,
    iterations: int | None = None,
    device: torch.device | None = None,
    quiet: bool = False,
    progress: ProgressDisplay | None = None,
) -> Manifest:
    """Run the demo into ``output``; return the manifest of the restoration.

    ``quiet``: no opening line on stderr; ``progress``: how to show the run's progress (None:
    not at all).
    """
    console = Console(stderr=True, quiet=quiet)
    clean, noisy = demo_images()
    output.mkdir(parents=True, exist_ok=True)
    write_image(output / "clean.png", Image(clean))
    write_image(output / "noisy.png", Image(noisy))
    preset = load_preset(DEMO_PRESET)
    overrides = {"iterations": iterations} if iterations else {}
    settings = preset.settings_for("deepred", overrides)
    job = Job(
        input=output / "noisy.png",
        output_dir=output,
        method="deepred",
        settings=settings,
        task=TaskOptions(DENOISE.name, DEMO_SIGMA),
        preset=preset.name,
        reference=output / "clean.png",
        device=device or torch.device("cpu"),
        overwrite=True,
        command="deeprestore demo",
    )
    console.print(
        f"Denoising a 64×64 crop (σ = {DEMO_SIGMA:g}) with DeepRED, "
        f"{settings.iterations} iterations on {job.device} …"
    )
    if progress is None:
        manifest = run_job(job)
    else:
        with progress("demo deepred", settings.iterations) as update:
            manifest = run_job(job, callback=update)
    restored = read_image(manifest.output).pixels
    gap = np.ones((clean.shape[0], 4, 3))
    side_by_side = np.concatenate([noisy, gap, restored, gap, clean], axis=1)
    write_image(output / "compare.png", Image(side_by_side))
    print(f"noisy    PSNR {manifest.psnr_input:.2f} dB  -> {output / 'noisy.png'}")
    print(f"restored PSNR {manifest.psnr:.2f} dB  -> {manifest.output}")
    print(f"side by side (noisy | restored | clean) -> {output / 'compare.png'}")
    return manifest
