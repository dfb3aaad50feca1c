"""The paper's tables as ``benchmarks.toml`` describes them (next to this file): their images,
methods, protocols, labels and the paper's numbers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deeprestore.apps.reproduce.events import ReproduceError
from deeprestore.config.presets import DEGRADATION_KEYS
from deeprestore.tasks.registry import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The paper's tables, in the order ``all`` runs them.
TABLES = ("denoise", "superres-x4", "superres-x8", "deblur-uniform", "deblur-gauss", "inpaint")
ALL = "all"
#: The row of the degraded input itself (noisy / blurred / masked), measured without restoring.
INPUT_ROW = "input"
#: How the denoisers are named in labels (``{denoiser}`` in benchmarks.toml).
DENOISER_LABELS = {"nlm": "NLM", "bm3d": "BM3D", "nlm-torch": "NLM, torch",
                   "bm3d-torch": "BM3D, torch"}


@dataclass(frozen=True)
class ImageEntry:
    """One image of a table: ``DATA/set/file``; ``index`` is its position in the table."""

    set: str
    file: str
    index: int

    @property
    def name(self) -> str:
        """The image's name (file stem): its folder under ``OUT/TABLE/``."""
        return Path(self.file).stem

    @property
    def relative(self) -> str:
        """``set/file``, relative to the data directory."""
        return f"{self.set}/{self.file}"


@dataclass
class Benchmark:
    """One table of ``benchmarks.toml`` (see the comments at its top)."""

    name: str
    title: str
    task: str
    preset: str
    quick_preset: str
    psnr: str
    crop: int
    methods: list[str]
    labels: dict[str, str]
    notes: list[str]
    degradation: dict[str, Any]
    sets: dict[str, list[str]]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def images(self) -> list[ImageEntry]:
        """Every image of the table, sets in order."""
        files = [(s, f) for s, names in self.sets.items() for f in names]
        return [ImageEntry(s, f, i) for i, (s, f) in enumerate(files)]

    def label(self, method: str, denoiser: str | None = None) -> str:
        """How ``method`` is named in results.md and the grids.

        ``denoiser``: the denoiser the method ran with (``nlm``, ``bm3d-torch``, ...), which
        fills a ``{denoiser}`` in the label; unknown (None) leaves ``denoiser`` there.
        """
        name = DENOISER_LABELS.get(denoiser, denoiser) if denoiser else "denoiser"
        return self.labels.get(method, method).replace("{denoiser}", name)

    def paper_value(self, set_name: str, method: str, image: str | None = None) -> float | None:
        """The paper's PSNR (dB): the set average, or one image's when ``image`` is given."""
        if image is None:
            return self.paper.get(set_name, {}).get(method)
        return self.per_image.get(set_name, {}).get(method, {}).get(image)


def benchmarks_path() -> Path:
    """Where ``benchmarks.toml`` is (inside the installed package)."""
    return Path(str(resources.files("deeprestore.apps.reproduce"))) / "benchmarks.toml"


def load_benchmarks(path: Path | None = None) -> dict[str, Benchmark]:
    """Parse and check ``benchmarks.toml``: table name → :class:`Benchmark`."""
    path = path or benchmarks_path()
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    tables: dict[str, Benchmark] = {}
    for name, raw in data.items():
        where = f"{path} [{name}]"
        task = raw["task"]
        allowed = (INPUT_ROW, *TASKS[task].methods)
        methods = list(raw["methods"])
        for method in methods:
            if method not in allowed:
                raise ValueError(f"{where}: method {method!r} does not apply to {task}")
        for key in raw.get("degradation", {}):
            if key not in DEGRADATION_KEYS:
                raise ValueError(f"{where}: unknown degradation key {key!r}")
        sets = {s: list(table["images"]) for s, table in raw["sets"].items()}
        names = [Path(f).stem for files in sets.values() for f in files]
        if len(names) != len(set(names)):
            raise ValueError(f"{where}: two images share a name")
        bench = Benchmark(
            name=name, title=raw["title"], task=task, preset=raw["preset"],
            quick_preset=raw["quick_preset"], psnr=raw["psnr"], crop=int(raw["crop"]),
            methods=methods, labels=dict(raw.get("labels", {})), notes=list(raw.get("notes", [])),
            degradation=dict(raw.get("degradation", {})), sets=sets,
            paper={s: dict(t.get("paper", {})) for s, t in raw["sets"].items()},
            per_image={s: {m: dict(v) for m, v in t.get("per_image", {}).items()}
                       for s, t in raw["sets"].items()},
        )
        for set_name in sets:
            quoted = set(bench.paper[set_name]) | set(bench.per_image[set_name])
            if not quoted <= set(methods):
                raise ValueError(f"{where}: paper numbers for methods not in the table")
        tables[name] = bench
    if tuple(tables) != TABLES:
        raise ValueError(f"{path}: the tables must be {', '.join(TABLES)}")
    return tables


def select_methods(bench: Benchmark, methods: Sequence[str] | None) -> list[str]:
    """``bench``'s methods among ``methods`` (all when None), in the table's order."""
    if not methods:
        return list(bench.methods)
    unknown = [m for m in methods if m not in bench.methods]
    if unknown:
        raise ReproduceError(f"method {unknown[0]!r} is not in table {bench.name} "
                             f"(its methods: {', '.join(bench.methods)})")
    return [m for m in bench.methods if m in methods]


def matches(entry: ImageEntry, wanted: str) -> bool:
    """Whether ``wanted`` names ``entry`` (by name, file, ``set/file`` or ``set/name``)."""
    text = wanted.strip().strip("/")
    return text in (entry.name, entry.file, entry.relative, f"{entry.set}/{entry.name}")


def select_images(bench: Benchmark, images: Sequence[str] | None) -> list[ImageEntry]:
    """``bench``'s images named in ``images`` (all when None), in the table's order."""
    entries = bench.images()
    if not images:
        return entries
    for wanted in images:
        if not any(matches(e, wanted) for e in entries):
            known = ", ".join(e.name for e in entries)
            raise ReproduceError(f"image {wanted!r} is not in table {bench.name} "
                                 f"(its images: {known})")
    return [e for e in entries if any(matches(e, w) for w in images)]
