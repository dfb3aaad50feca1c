"""TOML presets: find them, read them, and turn one into
:class:`~deeprestore.config.settings.Settings`.

A preset is a plain TOML file a user can copy and edit::

    name = "denoise"
    task = "denoise"
    description = "..."

    [degradation]      # what the input went through (task options; flags win)
    sigma = 25.0

    [defaults]         # shared by every method
    iterations = 5000
    lr = 0.01

    [methods.deepred]  # per method, overriding [defaults]
    lam = 0.5

    [everyday]         # restore commands and the Python API only, never ``reproduce``
    net_channels = 32

Effective settings for a method = built-in defaults ← ``[defaults]`` ← ``[methods.METHOD]`` ←
(restores only) ``[everyday]`` ← command-line overrides (``--set key=value``, ``--iters N``).
``[everyday]`` holds what a photo run changes from the table's values to finish in reasonable
time (each value measured; the preset file says where). Unknown keys and wrong types are errors
that name the key and the file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deeprestore.config.settings import Settings, SettingsError, coerce_setting
from deeprestore.methods import METHODS
from deeprestore.tasks.registry import DENOISE, TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOP_LEVEL_KEYS = {"name", "task", "description", "source", "degradation", "defaults", "methods",
                  "everyday"}
#: Keys of ``[degradation]`` and their types (σ on the 0–255 scale).
DEGRADATION_KEYS: dict[str, tuple[type, ...]] = {
    "sigma": (int, float),
    "kernel": (str,),
    "factor": (int,),
    "downsampler": (str,),
    "mask": (str,),
}


class PresetError(ValueError):
    """A preset that cannot be found, parsed or validated (one-line message)."""


@dataclass
class Preset:
    """A parsed preset file."""

    name: str
    task: str
    description: str
    path: Path
    degradation: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: settings restores (not ``reproduce``) use over ``defaults`` and ``methods``
    everyday: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def settings_for(self, method: str, overrides: dict[str, Any] | None = None, *,
                     everyday: bool = False) -> Settings:
        """Effective :class:`Settings` for ``method``: defaults ← preset ← (``everyday``:
        the preset's ``[everyday]`` table) ← ``overrides``."""
        if method not in METHODS:
            raise SettingsError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
        values: dict[str, Any] = {}
        values.update(self.defaults)
        values.update(self.methods.get(method, {}))
        if everyday:
            values.update(self.everyday)
        for key, value in (overrides or {}).items():
            values[key] = coerce_setting(key, value, "--set")
        values["method"] = method
        return Settings(**values).validate()


def preset_dirs() -> list[Path]:
    """Where named presets live: inside the installed package (wheel), else the source tree."""
    dirs: list[Path] = []
    packaged = Path(str(resources.files("deeprestore"))) / "presets"
    if packaged.is_dir():
        dirs.append(packaged)
    source_tree = Path(__file__).resolve().parents[2] / "presets"
    if source_tree.is_dir() and source_tree not in dirs:
        dirs.append(source_tree)
    return dirs


def available_presets() -> dict[str, Path]:
    """Named presets, name → file (packaged ones first)."""
    found: dict[str, Path] = {}
    for directory in preset_dirs():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by name (``denoise``) or by path (``my.toml``); validate every key."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix != ".toml" or not path.exists():
        presets = available_presets()
        if text_name in presets:
            path = presets[text_name]
        elif path.suffix == ".toml" or "/" in text_name:
            raise PresetError(f"preset file not found: {text_name}")
        else:
            known = ", ".join(presets) or "none installed"
            raise PresetError(f"unknown preset {text_name!r} (known: {known})")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise PresetError(f"preset {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"preset {path} does not parse as TOML: {err}") from None
    except OSError as err:
        raise PresetError(f"cannot read preset {path}: {err.strerror or err}") from None
    return parse_preset(data, path, text)


def parse_preset(data: dict[str, Any], path: Path, text: str = "") -> Preset:
    """Validate a preset's TOML tables; errors name the key and the file."""
    where = str(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            allowed = ", ".join(sorted(TOP_LEVEL_KEYS))
            raise PresetError(f"unknown key {key!r} in {where} (allowed: {allowed})")
    task = data.get("task", DENOISE.name)
    if not isinstance(task, str) or task not in TASKS:
        raise PresetError(f"key 'task' in {where} must be one of {', '.join(TASKS)}; got {task!r}")
    for key in ("name", "description", "source"):
        if key in data and not isinstance(data[key], str):
            raise PresetError(f"key {key!r} in {where} must be a string")
    degradation = _degradation(data, where)
    try:
        defaults = _settings_table(_table(data, "defaults", where), f"{where} [defaults]")
        everyday = _settings_table(_table(data, "everyday", where), f"{where} [everyday]")
        methods = _methods(data, where)
    except SettingsError as err:
        raise PresetError(str(err)) from None
    preset = Preset(
        name=data.get("name", path.stem),
        task=task,
        description=data.get("description", ""),
        path=path,
        degradation=degradation,
        defaults=defaults,
        methods=methods,
        everyday=everyday,
        text=text,
    )
    _check_settings(preset, where)
    return preset


def _degradation(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``[degradation]`` table, each key known and of its type."""
    degradation = _table(data, "degradation", where)
    for key, value in degradation.items():
        if key not in DEGRADATION_KEYS:
            allowed = ", ".join(DEGRADATION_KEYS)
            raise PresetError(f"unknown key 'degradation.{key}' in {where} (allowed: {allowed})")
        kinds = DEGRADATION_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise PresetError(
                f"key 'degradation.{key}' in {where} must be {kinds[0].__name__}, got {value!r}"
            )
    return degradation


def _settings_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """A table of settings, each value checked and coerced (:class:`SettingsError` naming
    ``where``)."""
    return {k: coerce_setting(k, v, where) for k, v in table.items()}


def _methods(data: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The ``[methods.METHOD]`` tables: known methods, their settings coerced."""
    methods: dict[str, dict[str, Any]] = {}
    for method, table in _table(data, "methods", where).items():
        if method not in METHODS:
            raise PresetError(
                f"unknown method 'methods.{method}' in {where} (known: {', '.join(METHODS)})"
            )
        if not isinstance(table, dict):
            raise PresetError(f"'methods.{method}' in {where} must be a table")
        methods[method] = _settings_table(table, f"{where} [methods.{method}]")
    return methods


def _check_settings(preset: Preset, where: str) -> None:
    """Every method the preset names must give valid settings, with and without
    ``[everyday]``."""
    for method in preset.methods:
        try:
            preset.settings_for(method)
        except SettingsError as err:
            raise PresetError(f"{where} [methods.{method}]: {err}") from None
    for method in preset.methods or ["deepred"]:
        try:
            preset.settings_for(method, everyday=True)
        except SettingsError as err:
            raise PresetError(f"{where} [everyday] (with {method}): {err}") from None


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise PresetError(f"key {key!r} in {where} must be a table")
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set key=value``; the value is read as TOML (bare words become strings)."""
    if "=" not in text:
        raise SettingsError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key:
        raise SettingsError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    coerce_setting(key, value, "--set")
    return key, value
