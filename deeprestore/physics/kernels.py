"""Blur and downsampling kernels: the papers' named blur kernels, kernel files, and the
anti-aliasing filters of super-resolution.

Every kernel is a float64 numpy array (kh, kw) summing to 1. Blur kernels are used by
:class:`~deeprestore.physics.operators.Blur` (kernel centre at (kh//2, kw//2)); the
downsampling kernels by :class:`~deeprestore.physics.operators.Downsample`, whose allowed
factors (:data:`FACTORS`, checked by :func:`check_sr_factor`) and filters (:data:`DOWNSAMPLERS`)
are defined here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "KNOWN_KERNELS",
    "FACTORS",
    "DOWNSAMPLERS",
    "named_kernel",
    "load_kernel",
    "check_sr_factor",
    "lanczos2_kernel",
    "bicubic_kernel",
    "downsampling_kernel",
]

#: The named blur kernels of the papers (:func:`named_kernel`).
KNOWN_KERNELS: tuple[str, ...] = ("uniform9", "gauss25")


def named_kernel(name: str) -> np.ndarray:
    """Return a named blur kernel as a float64 (kh, kw) array summing to 1.

    ``uniform9``: 9×9 box, every entry 1/81. ``gauss25``: 25×25 Gaussian with standard deviation
    1.6 pixels centred at (12, 12), normalised to sum 1 (MATLAB ``fspecial('gaussian', 25, 1.6)``).
    """
    if name == "uniform9":
        return np.full((9, 9), 1.0 / 81.0, dtype=np.float64)
    if name == "gauss25":
        r = np.arange(25, dtype=np.float64) - 12.0
        g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * 1.6**2))
        return g / g.sum()
    raise ValueError(f"unknown kernel name {name!r}; known kernels: {', '.join(KNOWN_KERNELS)}")


def _read_text_matrix(path: Path) -> np.ndarray:
    """The matrix of a ``.txt``/``.csv`` kernel file (one row a line, ``#`` comments) as float64."""
    rows: list[list[float]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            rows.append([float(v) for v in line.replace(",", " ").split()])
    if not rows:
        return np.zeros((0, 0))
    if len({len(r) for r in rows}) != 1:
        raise ValueError("rows have different lengths")
    return np.asarray(rows, dtype=np.float64)


def load_kernel(path: str | Path) -> np.ndarray:
    """Load a blur kernel from a file and return it as a float64 (kh, kw) array summing to 1.

    Formats: ``.npy`` (a 2-D array), ``.txt``/``.csv`` (a matrix, one row per line, entries
    separated by whitespace or commas; ``#`` starts a comment), or any grayscale image imageio
    reads (PNG, TIFF, ...; an RGB(A) image is reduced to the mean of its R, G, B channels). The
    kernel is normalised to sum 1. Negative entries are clipped to 0 before normalising.

    Raises ``FileNotFoundError`` if the file does not exist and a one-line ``ValueError`` naming
    the file if it cannot be parsed, is empty, is not 2-D, has non-finite entries or a sum <= 0.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"kernel file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            k = np.asarray(np.load(p, allow_pickle=False), dtype=np.float64)
        elif suffix in (".txt", ".csv"):
            k = _read_text_matrix(p)
        else:
            import imageio.v3 as iio

            k = np.asarray(iio.imread(p), dtype=np.float64)
            if k.ndim == 3 and k.shape[-1] in (3, 4):
                k = k[..., :3].mean(axis=-1)
            elif k.ndim == 3 and k.shape[-1] == 1:
                k = k[..., 0]
    except Exception as exc:  # noqa: BLE001 - re-raised as a one-line ValueError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"kernel file {str(p)!r}: cannot read it ({msg})") from exc
    if k.size == 0:
        raise ValueError(f"kernel file {str(p)!r} is empty")
    if k.ndim != 2:
        raise ValueError(f"kernel file {str(p)!r} is not 2-D (shape {k.shape})")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"kernel file {str(p)!r} has non-finite entries")
    total = float(k.sum())
    if total <= 0.0:
        raise ValueError(f"kernel file {str(p)!r} sums to {total:g} <= 0; cannot normalise it")
    k = np.clip(k, 0.0, None)
    return k / k.sum()


#: The super-resolution factors of the papers (and of :class:`~.operators.Downsample`).
FACTORS: tuple[int, ...] = (2, 4, 8)
#: The downsampling filters :func:`downsampling_kernel` knows (``lanczos2``: DIP's; the default).
DOWNSAMPLERS: tuple[str, ...] = ("lanczos2", "bicubic")
#: the DIP authors' SR model, H when none is named
DEFAULT_DOWNSAMPLER = "lanczos2"


def check_sr_factor(factor: object) -> int:
    """Return ``factor`` as an int if it is one of :data:`FACTORS` (2, 4 or 8).

    Raises a one-line ``ValueError`` ("factor must be 2, 4 or 8 (got ...)") for any other value,
    a non-integer (a float, a bool, None) included.
    """
    allowed = f"{', '.join(str(f) for f in FACTORS[:-1])} or {FACTORS[-1]}"
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        raise ValueError(f"factor must be {allowed} (got {factor!r})")
    if int(factor) not in FACTORS:
        raise ValueError(f"factor must be {allowed} (got {factor})")
    return int(factor)


def _half_phase_taps(factor: int) -> np.ndarray:
    """Tap positions in low-resolution pixel units for the 4*factor-tap, phase-0.5 kernels."""
    k = np.arange(4 * factor, dtype=np.float64)
    return (k + 0.5 - 2.0 * factor) / factor


def lanczos2_kernel(factor: int) -> np.ndarray:
    """The DIP authors' Lanczos-2 downsampling kernel (phase 0.5), float64 (4f, 4f), sum 1.

    Entry (i, j) is ``L(d_i) L(d_j)`` normalised, with ``L(d) = 2 sin(πd) sin(πd/2) / (πd)²`` and
    ``d_i = (i + 0.5 - 2f) / f`` — identical to ``get_kernel(f, 'lanczos', 0.5, 4f + 1, support=2)``
    in deep-image-prior's ``models/downsampler.py``.
    """
    d = _half_phase_taps(factor)
    support = 2.0
    v = support * np.sin(np.pi * d) * np.sin(np.pi * d / support) / (np.pi * np.pi * d * d)
    k2 = np.outer(v, v)
    return k2 / k2.sum()


def bicubic_kernel(factor: int) -> np.ndarray:
    """Antialiased bicubic downsampling kernel (Keys cubic, a = -0.5, stretched by ``factor``).

    float64 (4f, 4f), separable, sum 1, taps at the same half-pixel phase as
    :func:`lanczos2_kernel` (the sampling geometry of PIL's antialiased bicubic resize).
    """
    t = np.abs(_half_phase_taps(factor))
    a = -0.5
    v = np.where(
        t <= 1.0,
        (a + 2.0) * t**3 - (a + 3.0) * t**2 + 1.0,
        np.where(t < 2.0, a * t**3 - 5.0 * a * t**2 + 8.0 * a * t - 4.0 * a, 0.0),
    )
    k2 = np.outer(v, v)
    return k2 / k2.sum()


def downsampling_kernel(factor: int, kind: str = DEFAULT_DOWNSAMPLER) -> np.ndarray:
    """The (4f, 4f) float64 downsampling kernel ``kind`` (one of :data:`DOWNSAMPLERS`) for factor f.

    Raises a one-line ``ValueError`` for an unknown kind.
    """
    if kind not in DOWNSAMPLERS:
        known = ", ".join(DOWNSAMPLERS)
        raise ValueError(f"unknown downsampling kind {kind!r}; known kinds: {known}")
    return lanczos2_kernel(factor) if kind == "lanczos2" else bicubic_kernel(factor)
