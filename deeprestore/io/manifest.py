"""The manifest of one restoration: ``NAME_METHOD.json``, beside the restored image and its log.

One :class:`Manifest` is what the job writes, what ``deeprestore summary`` and ``deeprestore
reproduce`` read back, and what :func:`~deeprestore.apps.jobs.run_job` returns. On disk it is
JSON with one key per field, in the order of the fields (``compare`` only when a comparison
picture was written).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprestore.io.writers import write_json

#: the fields every manifest has had (what tells a manifest from other JSON)
REQUIRED = ("input", "output", "method", "iterations")


@dataclass(frozen=True)
class Manifest:
    """Everything one run did: inputs, every effective parameter, what happened, versions.

    PSNR and SSIM (``psnr``, ``psnr_input``, ``ssim``) are in dB / unitless, measured by the
    task's protocol (``psnr_protocol``) against ``reference``; None without a reference.
    ``seconds``: wall time of the run (a grouped run: the group's). ``size``: the restored
    image's width, height, channels and bit depth.
    """

    input: str
    output: str
    log: str
    task: str
    method: str
    preset: str
    degradation: dict[str, Any]
    parameters: dict[str, Any]
    precision: dict[str, Any] | None
    denoiser: str | None
    denoiser_calls: int
    seed: int
    device: str
    iterations: int
    stopped_at: int | None
    stop: dict[str, Any] | None
    tiling: dict[str, Any] | None
    grouped_with: int | None
    seconds: float
    resumed_from: int | None
    rollbacks: int
    backtracks: int
    psnr_protocol: str
    reference: str | None
    psnr: float | None
    psnr_input: float | None
    ssim: float | None
    size: dict[str, int]
    started: str
    command: str
    versions: dict[str, str]
    #: the side-by-side picture (input | restored | reference), when one was written
    compare: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk (``compare`` left out when there is none)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if data["compare"] is None:
            del data["compare"]
        return data

    @classmethod
    def from_dict(cls, data: object) -> Manifest | None:
        """The manifest stored in ``data`` (a parsed JSON object); None when ``data`` is not
        one (a failure record, another program's JSON). A field an older version did not
        write reads as None; :data:`REQUIRED` must be there."""
        if not isinstance(data, dict) or any(key not in data for key in REQUIRED):
            return None
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})

    def write(self, path: Path) -> None:
        """Write the manifest to ``path`` (JSON), atomically."""
        write_json(path, self.to_dict())


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in the file ``path`` (a manifest, a failure record, a degradation
    record); None when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(path: Path) -> Manifest | None:
    """The manifest in the file ``path``; None when it is missing, unreadable or not one."""
    return Manifest.from_dict(read_json_object(path))
