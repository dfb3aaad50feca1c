"""``--precision auto``'s decision, made once per machine and kept (issue 43).

Timing float32 against bf16 before every run made the choice follow the machine's load: where
the ratio sits near :data:`~deeprestore.solvers.precision.BF16_MIN_SPEEDUP` the same command ran
bf16 once and float32 the next time, and its result moved by up to 1 dB (the automatic stop
fires elsewhere). The first decision for a kind of step on this machine is measured and written
here; later runs read it, time only the chosen precision (for the cost line) and say where the
decision comes from. A step's kind: the CPU (model and bf16 features), torch's version, the
thread count, the network's shape and the side the step is timed at, rounded to a power of two.

The file is JSON in ``$DEEPRESTORE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/deeprestore`` or
``~/.cache/deeprestore``): ``precision.json``. Delete it (or the entry) to measure again. An
unreadable file is ignored and rewritten; a file that cannot be written leaves the decision
unkept (the run goes on).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from deeprestore import execution
from deeprestore.config.settings import Settings

FILE_NAME = "precision.json"


def cache_dir() -> Path:
    """Where decisions are kept (module docstring)."""
    own = os.environ.get("DEEPRESTORE_CACHE_DIR")
    if own:
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deeprestore"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_kind(settings: Settings, device: torch.device, side: int) -> str:
    """The key of a decision: machine, torch, threads, network shape, timed side (pixels,
    rounded up to a power of two)."""
    rounded = 1 << max(0, (max(side, 1) - 1).bit_length())
    parts = [device.type, _cpu_model(), f"bf16={execution.cpu_has_native_bf16()}",
             f"torch={torch.__version__}", f"threads={torch.get_num_threads()}",
             f"net={settings.input_channels}x{settings.net_channels}x{settings.skip_channels}"
             f"x{settings.upsample}x{settings.runs}", f"side={rounded}"]
    return " | ".join(parts)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall(kind: str) -> dict[str, Any] | None:
    """The decision kept for ``kind`` (``precision``, ``step_seconds``, ``at``), or None."""
    entry = _read(cache_dir() / FILE_NAME).get(kind)
    if isinstance(entry, dict) and entry.get("precision") in ("float32", "bf16"):
        return entry
    return None


def keep(kind: str, precision: str, step_seconds: dict[str, float]) -> Path | None:
    """Write the decision for ``kind`` (atomically, next to the others); the file's path, or
    None when it cannot be written."""
    directory = cache_dir()
    path = directory / FILE_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[kind] = {"precision": precision,
                      "step_seconds": {k: round(v, 6) for k, v in step_seconds.items()},
                      "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".precision-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        return None
    return path
