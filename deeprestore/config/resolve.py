"""From what a user asked for to what a run uses: preset, :class:`Settings`, task options.

The one place where the command line and :func:`deeprestore.restore` turn a task, a method, a
preset name, overrides and a denoiser choice into a run's parameters, so both give the same
numbers for the same request. Precedence: task options from the user (flags or arguments) ←
the input's ``degrade`` sidecar (CLI only) ← the preset's ``[degradation]``; settings from the
preset's ``[defaults]`` ← ``[methods.METHOD]`` ← overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeprestore.config.presets import Preset, PresetError, load_preset
from deeprestore.config.settings import Settings, SettingsError
from deeprestore.methods import DENOISER_BASELINES
from deeprestore.tasks.options import AUTO_SIGMA, TaskOptions, read_sidecar
from deeprestore.tasks.registry import DENOISE, TASKS, TaskError

if TYPE_CHECKING:
    import torch


def default_preset(options: TaskOptions) -> str:
    """The Table 1 preset of a task (the blur or the factor picks the row); an unknown
    task's name as it is."""
    task = TASKS.get(options.task)
    return options.task if task is None else task.default_preset(options)


def check_method(task: str, method: str) -> None:
    """Raise :class:`TaskError` unless ``task`` is known and offers ``method``."""
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r} (use {', '.join(TASKS)})")
    methods = TASKS[task].methods
    if method not in methods:
        raise TaskError(f"unknown method {method!r} for {task} (use {', '.join(methods)})")


#: tasks whose quick tables moved by at most 0.1 dB on average when their network rows ran in
#: bf16 instead of float32 (same seeds; docs/performance.md, "bf16 and quality"): ``auto`` may
#: choose bf16 for them; the others run float32 unless ``--precision`` says otherwise
BF16_TASKS = frozenset({DENOISE.name})


def everyday_defaults(overrides: dict[str, Any], task: str) -> dict[str, Any]:
    """What a restore (command line or :func:`deeprestore.restore`) uses where the user chose
    nothing, over the preset: ``stop = "auto"`` unless an iteration count or a stop rule was
    given (the preset's count is then the ceiling); ``precision = "auto"`` for the tasks of
    :data:`BF16_TASKS` (bf16 on a CPU where a step measures at least 1.25× faster in it, else
    float32: :mod:`deeprestore.solvers.precision`), float32 for the others. ``reproduce`` never
    uses them: the tables run the presets as they are, in float32.
    """
    chosen = dict(overrides)
    if "iterations" not in chosen and "stop" not in chosen:
        chosen["stop"] = "auto"
    chosen.setdefault("precision", "auto" if task in BF16_TASKS else "float32")
    return chosen


class SettingsResolver:
    """The settings of one method of one task, for any preset, with the user's overrides.

    ``overrides``: setting name → value (``--set``, ``--iters``, keyword arguments);
    ``denoiser``: ``auto`` (the preset's family, its torch version on CUDA) or a denoiser name;
    an explicit ``denoiser`` override is kept as given unless ``denoiser`` is not ``auto``;
    ``everyday``: add :func:`everyday_defaults` and the preset's ``[everyday]`` table
    (restores; not the paper's tables).
    Presets are read once each.
    """

    def __init__(self, task: str, method: str, overrides: dict[str, Any], denoiser: str,
                 device: torch.device, *, everyday: bool = False) -> None:
        check_method(task, method)
        if everyday:
            overrides = everyday_defaults(overrides, task)
        self.task, self.method, self.overrides = task, method, dict(overrides)
        self.everyday = everyday
        self.denoiser, self.device = denoiser, device
        #: one-line notes for the user about choices made here (each said once)
        self.notes: list[str] = []
        self._presets: dict[str, Preset] = {}

    def settings(self, preset_name: str) -> tuple[Preset, Settings]:
        """The preset called (or at the path) ``preset_name`` and the settings it gives."""
        from deeprestore.denoisers import choose_denoiser

        if preset_name not in self._presets:
            preset = load_preset(preset_name)
            if preset.task != self.task:
                raise PresetError(f"preset {preset.name!r} is for {preset.task}, not {self.task}")
            self._presets[preset_name] = preset
        preset = self._presets[preset_name]
        settings = preset.settings_for(self.method, self.overrides, everyday=self.everyday)
        if self.method in DENOISER_BASELINES:  # the one-shot method is its own denoiser
            settings.denoiser = self._one_shot_denoiser(settings)
        elif self.denoiser != "auto" or "denoiser" not in self.overrides:
            try:
                settings.denoiser = choose_denoiser(self.denoiser, settings.denoiser, self.device)
            except ValueError as err:
                raise SettingsError(str(err)) from None
            if (self.denoiser == "auto" and self.device.type == "cuda"
                    and not settings.denoiser.endswith("-torch")):
                self._note(f"--denoiser auto: {settings.denoiser} has no torch version; it runs "
                           f"on the CPU, its input copied from {self.device} and back")
        return preset, settings.validate()

    def _note(self, text: str) -> None:
        """Keep ``text`` for :attr:`notes`, once."""
        if text not in self.notes:
            self.notes.append(text)

    def _one_shot_denoiser(self, settings: Settings) -> str:
        """The implementation ``--method nlm|bm3d`` runs: with ``auto`` the reference one
        (the method's own name, the package the paper's baselines used, on every device); a
        ``--denoiser`` (or ``denoiser`` override) of the same family (``bm3d-torch`` for
        ``bm3d``) is run as named; one of another family contradicts the method."""
        from deeprestore.denoisers import choose_denoiser

        requested = self.denoiser
        if requested == "auto":
            requested = str(self.overrides.get("denoiser", self.method))
        try:
            chosen = choose_denoiser(requested, self.method, self.device)
        except ValueError as err:
            raise SettingsError(str(err)) from None
        if chosen.removesuffix("-torch") != self.method:
            raise SettingsError(f"--method {self.method} runs {self.method.upper()}: --denoiser "
                                f"{chosen} is another denoiser (use {self.method} or "
                                f"{self.method}-torch, or --method deepred with it as f)")
        return chosen

    def resolve(self, options: TaskOptions, preset_name: str | None
                ) -> tuple[Preset, Settings, TaskOptions]:
        """Preset, settings and the task options in effect (``options`` ← the preset's
        ``[degradation]``); ``preset_name`` None: the task's Table 1 row for ``options``.

        Denoising with no σ given (flag, argument or sidecar) estimates it from the image
        (``sigma = "auto"``): the preset's σ describes the table's inputs, not the user's.
        """
        preset, settings = self.settings(preset_name or default_preset(options))
        task = TASKS.get(options.task)
        if task is not None and task.sigma_estimated_by_default and options.sigma is None:
            options = options.merged({"sigma": AUTO_SIGMA}, source_names=("default",))
        return preset, settings, options.merged(preset.degradation, source_names=("preset",))

    def resolve_file(self, options: TaskOptions, path: Path, preset_name: str | None
                     ) -> tuple[Preset, Settings, TaskOptions]:
        """:meth:`resolve` for the input file ``path``: its ``degrade`` sidecar
        (``NAME.degrade.json``, if it is there and of this task) fills what ``options`` leaves
        unset, before the preset does."""
        sidecar = read_sidecar(path)
        if sidecar.get("task") not in (None, options.task):
            sidecar = {}
        return self.resolve(options.merged(sidecar, source_names=("sidecar",)), preset_name)
