"""The input list of a batch: files, directories and glob patterns → a sorted list of images.

Each input carries the folder, relative to the argument it came from, under which its outputs go,
so ``deeprestore denoise photos/ --recursive -o out/`` writes ``photos/a/b.png``'s results to
``out/a/``. ``--shard I/N`` then keeps the I-th of N disjoint slices of that list.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from deeprestore.io.images import IMAGE_SUFFIXES

DEFAULT_MAX_PIXELS = 4096 * 4096


class InputError(ValueError):
    """An input argument that names no image (a usage error); one-line message."""


@dataclass(frozen=True)
class InputFile:
    """One image to process: its ``path`` and the ``subdir`` (relative) its outputs go to."""

    path: Path
    subdir: Path = Path()


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(items: list[Path] | list[str], *, recursive: bool = False) -> list[InputFile]:
    """Expand command-line inputs, in the order given, each directory and glob sorted.

    A directory gives the images directly inside it (with ``recursive``, at any depth, keeping
    their sub-folders as ``subdir``); a glob pattern (``*``, ``?``, ``[``) gives its matching
    image files; anything else is taken as a file (a missing one fails later, as one image).
    Raises :class:`InputError` for a directory or pattern that yields no image. A file named
    twice is kept once.
    """
    found: list[InputFile] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            images = _images_in(path, recursive)
            if not images:
                raise InputError(f"{path}: the directory has no images"
                                 + ("" if recursive else " (use --recursive to look deeper)"))
            found.extend(InputFile(p, p.parent.relative_to(path)) for p in images)
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=recursive))
            images = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise InputError(f"{text}: the pattern matches no images")
            found.extend(InputFile(p) for p in images)
        else:
            found.append(InputFile(path))
    seen: set[Path] = set()
    unique = []
    for entry in found:
        key = entry.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with 0 ≤ I < N; raises :class:`InputError` otherwise."""
    index_text, _, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard I/N needs 0 ≤ I < N, got {text!r}")
    return index, count


def select_shard(inputs: list[InputFile], index: int, count: int) -> list[InputFile]:
    """The ``index``-th of ``count`` disjoint slices of ``inputs`` (every count-th item).

    Deterministic: the same input list gives the same slices, and the slices of 0..count-1
    together hold every input exactly once.
    """
    return inputs[index::count]


def parse_max_pixels(text: str) -> int:
    """``"4096x4096"``, ``"16777216"`` or ``"16M"`` → a pixel count ≥ 1."""
    cleaned = text.strip().lower().replace("×", "x")
    try:
        if "x" in cleaned:
            width, height = cleaned.split("x", 1)
            value = int(width) * int(height)
        elif cleaned.endswith("m"):
            value = int(float(cleaned[:-1]) * 1_000_000)
        else:
            value = int(cleaned)
    except ValueError:
        raise InputError(f"--max-pixels must be like 4096x4096, 16M or 16777216, got {text!r}"
                         ) from None
    if value < 1:
        raise InputError(f"--max-pixels must be ≥ 1, got {text!r}")
    return value
