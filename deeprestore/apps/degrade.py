"""``deeprestore degrade``: make degraded inputs exactly as the papers did (REFERENCE.md §4).

- denoise: ``clip(x + N(0, (σ/255)²), 0, 1)``;
- deblur: circular blur with the kernel (FFT), then noise of σ (default √2), clipped;
- superres: centre crop to a multiple of the factor (recorded), Lanczos-3 antialiased downscale
  (PIL ``Image.LANCZOS`` on 8-bit pixels, as the DIP code), optional noise;
- inpaint: a mask (file, ``text``, ``random:P`` or ``holes:P``; 1 = known), missing pixels set to
  0, optional noise on the known ones.

For ``photo.png`` it writes ``DIR/photo.png`` (the degraded image, 8-bit PNG),
``DIR/photo.degrade.json`` (every parameter: task, kernel, factor, σ, seed, crop, mask file) and,
for inpainting, ``DIR/photo.mask.png`` (255 = known). The restore commands read the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeprestore import __version__
from deeprestore.arrays import Image
from deeprestore.io.images import read_image
from deeprestore.io.writers import write_image, write_json
from deeprestore.physics.degradations import (
    add_gaussian_noise,
    blur_image,
    crop_to_multiple,
    lanczos_downscale,
    parse_mask_spec,
)
from deeprestore.physics.kernels import DEFAULT_DOWNSAMPLER
from deeprestore.tasks.options import SIDECAR_SUFFIX
from deeprestore.tasks.registry import (
    DEBLUR,
    DEFAULT_KERNEL,
    DENOISE,
    INPAINT,
    SUPERRES,
    TASKS,
    TaskError,
    check_factor,
    check_kernel_fits,
    load_blur_kernel,
)


@dataclass
class Degraded:
    """A degraded image, its mask (inpainting) and the sidecar parameters."""

    image: np.ndarray
    mask: np.ndarray | None
    params: dict[str, Any]


def degrade_pixels(
    clean: np.ndarray,
    task: str,
    *,
    sigma: float | None = None,
    kernel: str | None = None,
    factor: int | None = None,
    mask: str | None = None,
    seed: int = 0,
) -> Degraded:
    """Degrade ``clean`` (H, W, C) float in [0, 1] for ``task``; σ on the 0–255 scale."""
    rng = np.random.default_rng(seed)
    sigma = TASKS[task].default_sigma if sigma is None else float(sigma)
    params: dict[str, Any] = {"task": task, "sigma": sigma, "seed": seed}
    mask_array = None
    image = clean
    if task == DEBLUR.name:
        kernel = kernel or DEFAULT_KERNEL
        k = load_blur_kernel(kernel)
        check_kernel_fits(k, clean.shape[:2])
        image = np.clip(blur_image(clean, k), 0.0, 1.0)
        params["kernel"] = kernel
    elif task == SUPERRES.name:
        factor = check_factor(factor if factor is not None else 4)
        if clean.shape[0] < factor or clean.shape[1] < factor:
            raise TaskError(f"the image is smaller than the factor {factor}")
        cropped, crop = crop_to_multiple(clean, factor)
        image = lanczos_downscale(cropped, factor)
        params.update(factor=factor, crop=list(crop), downsampler=DEFAULT_DOWNSAMPLER,
                      hr_size=[int(cropped.shape[0]), int(cropped.shape[1])])
    elif task == INPAINT.name:
        spec = mask or "random:0.5"
        try:
            mask_array = parse_mask_spec(spec, clean.shape[0], clean.shape[1], rng)
        except ValueError as err:
            raise TaskError(str(err)) from None
        params["mask_spec"] = spec
    elif task != DENOISE.name:
        raise TaskError(f"unknown task {task!r}")
    if sigma > 0:
        image = add_gaussian_noise(image, sigma, rng)
    if mask_array is not None:
        image = image * mask_array[:, :, None]
    params["size"] = [int(image.shape[0]), int(image.shape[1])]
    return Degraded(image, mask_array, params)


def degrade_file(
    path: Path,
    output_dir: Path,
    task: str,
    *,
    overwrite: bool = False,
    **degradation: Any,
) -> dict[str, Any]:
    """Degrade the image file ``path`` into ``output_dir``; return the sidecar parameters.

    ``degradation``: the keywords of :func:`degrade_pixels` (``sigma`` on the 0–255 scale,
    ``kernel``, ``factor``, ``mask``, ``seed``); a kernel file is recorded by its full path.
    """
    clean = read_image(path)
    target = output_dir / f"{path.stem}.png"
    if target.resolve() == path.resolve():
        raise TaskError(f"{path}: the output {target} would overwrite the input")
    sidecar = output_dir / f"{path.stem}{SIDECAR_SUFFIX}"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (use --overwrite to replace it)")
    kernel = degradation.get("kernel")
    if kernel is not None and Path(kernel).exists():
        degradation["kernel"] = str(Path(kernel).resolve())
    degraded = degrade_pixels(clean.pixels, task, **degradation)
    params = {"source": str(path), **degraded.params, "image": target.name,
              "deeprestore": __version__}
    if degraded.mask is not None:
        mask_path = output_dir / f"{path.stem}.mask.png"
        write_image(mask_path, Image(degraded.mask[:, :, None]))
        params["mask"] = mask_path.name
    write_image(target, Image(degraded.image, 8))
    write_json(sidecar, params)
    return params
