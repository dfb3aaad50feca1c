"""The four restore commands (denoise, deblur, superres, inpaint), built from one option
set: parse, resolve the settings (:mod:`deeprestore.config.resolve`), run each input as a
job (:mod:`deeprestore.apps.jobs`), print one line per image."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shlex
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deeprestore import execution
from deeprestore.apps.jobs import (
    DAY_MINUTES,
    Job,
    check_outputs,
    record_failure,
    run_job,
)
from deeprestore.cli.app import COMMAND_LINE, UsageProblem, app, check_output_folder
from deeprestore.cli.failures import INPUT_ERRORS, BatchFailures
from deeprestore.cli.options import (
    CheckpointEveryOpt,
    CompileOpt,
    DebugOpt,
    DenoiserOpt,
    DeviceOpt,
    InputsArg,
    JsonOpt,
    MaxMemoryOpt,
    MaxMinutesOpt,
    MaxPixelsOpt,
    NoCompareOpt,
    OutputOpt,
    OverwriteOpt,
    PrecisionOpt,
    PresetOpt,
    QuietOpt,
    RecursiveOpt,
    ReferenceOpt,
    RestoreItersOpt,
    ResumeOpt,
    RunsOpt,
    SeedOpt,
    SetOpt,
    ShardOpt,
    ThreadsOpt,
    TileOpt,
    apply_threads,
    check_flags,
    expand_inputs,
    iteration_overrides,
    option,
    parse_sigma,
    resolve_device,
    sigma_option,
    tile_size,
)
from deeprestore.cli.progress import run_progress, tell
from deeprestore.config.presets import parse_override
from deeprestore.config.resolve import SettingsResolver
from deeprestore.io.inputs import InputError, parse_max_pixels
from deeprestore.io.manifest import Manifest
from deeprestore.methods import NETWORK_METHODS
from deeprestore.solvers.cost import CostError, parse_bytes
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.registry import DEBLUR, DENOISE, INPAINT, SUPERRES, TASKS

if TYPE_CHECKING:
    import torch

    from deeprestore.config.settings import Settings

EXAMPLES_DENOISE = """
[b]Examples[/b]

  deeprestore denoise noisy.png  [dim]# DeepRED, 32-channel net; σ estimated; stops itself[/dim]
  deeprestore denoise noisy.png --method bm3d   [dim]# CBM3D: seconds on a CPU[/dim]
  deeprestore denoise noisy.png --method dip --iters 3000 -o out/  [dim]# exactly 3000[/dim]
  deeprestore denoise noisy.png --reference clean.png --json
  deeprestore denoise photo.jpg --method dip --precision float32
  deeprestore denoise big.png --tile 512 --max-minutes 60
  deeprestore denoise *.png --set lam=0.3 --set denoiser=bm3d --seed 1
"""


def _summary_line(manifest: Manifest) -> str:
    text = (
        f"{manifest.input}: {manifest.method} {manifest.iterations} it "
        f"{manifest.seconds:.1f} s -> {manifest.output}"
    )
    if manifest.psnr is not None:
        text += f"  PSNR {manifest.psnr:.2f} dB"
        if manifest.psnr_input is not None:
            text += f" (input {manifest.psnr_input:.2f} dB)"
    return text


@dataclass
class RestoreRequest:
    """The options every restore command shares: one field per flag, its Typer declaration as
    the field's type and its default as the field's (``--method``'s help is the task's)."""

    inputs: list[Path]
    output: OutputOpt = Path("restored")
    method: str = "deepred"
    preset: PresetOpt = None
    iters: RestoreItersOpt = None
    sets: SetOpt = None
    reference: ReferenceOpt = None
    runs: RunsOpt = None
    seed: SeedOpt = None
    device: DeviceOpt = "auto"
    threads: ThreadsOpt = "auto"
    denoiser: DenoiserOpt = "auto"
    quiet: QuietOpt = False
    as_json: JsonOpt = False
    overwrite: OverwriteOpt = False
    precision: PrecisionOpt = None
    compile_network: CompileOpt = False
    no_compare: NoCompareOpt = False
    recursive: RecursiveOpt = False
    shard: ShardOpt = None
    max_pixels: MaxPixelsOpt = "4096x4096"
    tile: TileOpt = "auto"
    max_minutes: MaxMinutesOpt = DAY_MINUTES
    max_memory: MaxMemoryOpt = None
    checkpoint_every: CheckpointEveryOpt = None
    resume: ResumeOpt = False
    debug: DebugOpt = False

    def overrides(self) -> dict[str, Any]:
        """The settings the flags change: ``--set`` pairs, then the flags named after settings."""
        values: dict[str, Any] = dict(parse_override(text) for text in (self.sets or []))
        values.update(iteration_overrides(self.iters))
        for key, value in (("runs", self.runs),
                           ("seed", self.seed), ("precision", self.precision)):
            if value is not None:
                values[key] = value
        if self.compile_network:
            values["compile"] = True
        return values



def run_restore(flags: TaskOptions, request: RestoreRequest) -> int:
    """Restore every input of ``request`` with one method.

    Task options come from the flags, then the input's ``degrade`` sidecar, then the preset's
    ``[degradation]`` table (:mod:`deeprestore.config.resolve`). Returns the exit code: 0 all done,
    1 an image failed, 2 an image did not fit the task options (wrong-size mask, kernel larger
    than the image, ...).
    """
    method = request.method
    check_flags(flags)
    check_output_folder(request.output)
    device = resolve_device(request.device)
    resolver = SettingsResolver(flags.task, method, request.overrides(), request.denoiser,
                                device, everyday=True)
    # a bad preset is a usage error before any work
    _, first, _ = resolver.resolve(flags, request.preset)
    if not request.quiet:
        _print_warnings(first, device, resolver.notes)
    make_job = _job_factory(request, device)
    files = expand_inputs(request.inputs, request.recursive, request.shard)
    apply_threads(request.threads, request.quiet)  # last: after every usage error
    if method in NETWORK_METHODS:
        execution.preload_optimizer_imports()

    failures = BatchFailures()
    for entry in files:
        path, out_dir = entry.path, request.output / entry.subdir
        try:
            preset, settings, options = resolver.resolve_file(flags, path, request.preset)
            job = make_job(input=path, output_dir=out_dir, settings=settings, task=options,
                           preset=preset.name)
            manifest = _run_unless_done(job, request)
        except INPUT_ERRORS as err:
            message = failures.report(path, err)
            # stderr only: an unwritable folder or full disk, or a run refused before it began
            if not isinstance(err, (OSError, CostError)):
                record_failure(out_dir, path, method, message)
            continue
        if manifest is not None:
            _print_result(manifest, request)
    return failures.exit_code


def bf16_warning(settings: Settings, device: torch.device) -> str | None:
    """A one-line warning when ``settings`` ask for bf16 on a CPU without bf16 arithmetic."""
    if settings.precision != "bf16" or device.type != "cpu" or execution.cpu_has_native_bf16():
        return None
    return ("--precision bf16 on this CPU is likely very slow: it has no bf16 arithmetic "
            "(AVX512-BF16 or AMX; see docs/performance.md); float32 is the default")


def _print_warnings(settings: Settings, device: torch.device, notes: list[str]) -> None:
    """The lines said once before a batch: bf16 on a CPU without it, the settings' notes."""
    warning = bf16_warning(settings, device)
    if warning is not None:
        tell(f"warning: {warning}")
    for note in notes:
        tell(f"note: {note}")


def _job_factory(request: RestoreRequest, device: torch.device) -> Callable[..., Job]:
    """:class:`Job` with what every input of ``request`` shares filled in; the rest (``input``,
    ``output_dir``, ``settings``, ``task``, ``preset``) is each input's. A usage error for a
    missing reference or a bad ``--max-pixels``, ``--max-memory`` or ``--tile``."""
    reference = request.reference
    if reference is not None and not reference.exists():
        raise UsageProblem(f"{reference}: reference image not found")
    try:
        pixel_limit = parse_max_pixels(request.max_pixels)
    except InputError as err:
        raise UsageProblem(str(err)) from None
    try:
        memory_limit = None if request.max_memory is None else parse_bytes(request.max_memory)
    except ValueError as err:
        raise UsageProblem(f"--max-memory: {err}") from None
    tile = tile_size(request.tile)
    return partial(
        Job, method=request.method, reference=reference, device=device,
        command="deeprestore " + shlex.join(COMMAND_LINE), overwrite=request.overwrite,
        compare=not request.no_compare, max_pixels=pixel_limit,
        checkpoint_every=request.checkpoint_every, resume=request.resume,
        max_memory=memory_limit, max_minutes=request.max_minutes, tile=tile,
        auto_tile=tile is None,
    )


def _run_unless_done(job: Job, request: RestoreRequest) -> Manifest | None:
    """Run ``job`` (a progress bar when stdout is a terminal and not ``--quiet``); None, and a
    line saying so, when its outputs exist and ``--overwrite`` is not given."""
    existing = check_outputs(job)
    if existing and not request.overwrite:
        if not request.quiet:
            tell(f"{job.input}: skipped, {existing[0]} exists (use --overwrite to redo)")
        return None
    quiet = request.quiet or not sys.stdout.isatty()
    notice = None if request.quiet else tell
    if quiet:
        return run_job(job, notice=notice)
    with run_progress(f"{job.input.name} {job.method}", job.settings.iterations) as update:
        return run_job(job, callback=update, notice=notice)


def _print_result(manifest: Manifest, request: RestoreRequest) -> None:
    """One image's result: its manifest on stdout with ``--json``; its summary line on stdout
    (on stderr with ``--json``) unless ``--quiet``."""
    if request.as_json:
        sys.stdout.write(json.dumps(manifest.to_dict()) + "\n")
        sys.stdout.flush()
    if not request.quiet:
        line = _summary_line(manifest)
        if request.as_json:
            tell(line)
        else:
            print(line, flush=True)


# ---------------------------------------------------------------- the four restore commands
EXAMPLES_DEBLUR = """
[b]Examples[/b]

  deeprestore deblur blurred.png --kernel uniform9           [dim]# Table 1 uniform row[/dim]
  deeprestore deblur blurred.png --kernel gauss25 --sigma 1.41
  deeprestore deblur blurred.png --kernel my_kernel.npy --method dip
  deeprestore degrade clean.png -o in/ --task deblur && deeprestore deblur in/clean.png
"""

EXAMPLES_SUPERRES = """
[b]Examples[/b]

  deeprestore superres small.png --factor 4                   [dim]# output is 4x larger[/dim]
  deeprestore superres small.png --factor 8 --method dip
  deeprestore degrade hr.png -o in/ --task superres --factor 4 && \\
    deeprestore superres in/hr.png --reference hr.png
"""

EXAMPLES_INPAINT = """
[b]Examples[/b]

  deeprestore inpaint damaged.png --mask mask.png             [dim]# mask: nonzero = known[/dim]
  deeprestore degrade clean.png -o in/ --task inpaint --mask random:0.5 && \\
    deeprestore inpaint in/clean.png --reference clean.png
"""



def _shared_options(task: str) -> list[inspect.Parameter]:
    """The options of every restore command after its task's own: :class:`RestoreRequest`'s
    fields (one definition for all four commands)."""
    method_help = ", ".join(TASKS[task].methods) + "."
    declared = typing.get_type_hints(RestoreRequest, include_extras=True)
    declared["method"] = Annotated[str, typer.Option("--method", "-m", help=method_help)]
    return [option(f.name, declared[f.name], f.default)
            for f in dataclasses.fields(RestoreRequest) if f.name != "inputs"]



#: Each restore command's own options (names are TaskOptions fields), before ``--sigma``.
TASK_OPTIONS: dict[str, list[inspect.Parameter]] = {
    DENOISE.name: [option("noise", Annotated[str | None, typer.Option(
        "--noise", metavar="auto|white|jpeg", help="The noise BM3D assumes: jpeg: the noise a "
        "JPEG file holds, correlated by its compression (its spectrum simulated with the file's "
        "own tables; --method bm3d and DeepRED's f with --denoiser bm3d); white: independent "
        "Gaussian; auto (default): jpeg for --method bm3d on a JPEG file, white otherwise "
        "(docs/photos.md compares them).",
        show_default=False)], None)],
    DEBLUR.name: [option("kernel", Annotated[str | None, typer.Option(
        "--kernel", "-k", help="uniform9, gauss25 or a kernel file (.npy, .txt, .csv, grey PNG). "
        "[default: uniform9]", show_default=False)], None)],
    SUPERRES.name: [
        option("factor", Annotated[int | None, typer.Option(
            "--factor", "-f", help="Upscaling factor: 2, 4 or 8. [default: 4]",
            show_default=False)], None),
        option("downsampler", Annotated[str | None, typer.Option(
            "--downsampler", help="H: lanczos2 (DIP's, default) or bicubic.",
            show_default=False)], None),
    ],
    INPAINT.name: [option("mask", Annotated[str | None, typer.Option(
        "--mask", help="Mask image of the input's size: nonzero = known pixel, 0 = to fill in.",
        show_default=False)], None)],
}
#: each restore command's examples (its one-line help is its task's, in the registry)
COMMAND_EXAMPLES = {DENOISE.name: EXAMPLES_DENOISE, DEBLUR.name: EXAMPLES_DEBLUR,
                    SUPERRES.name: EXAMPLES_SUPERRES, INPAINT.name: EXAMPLES_INPAINT}


def _restore_command(task: str) -> None:
    """Register ``deeprestore TASK``: its task options, ``--sigma`` and the shared options."""
    own = [*TASK_OPTIONS[task], sigma_option(task)]
    own_names = [p.name for p in own]

    def command(**values: Any) -> None:
        own_values = {name: values.pop(name) for name in own_names}
        own_values["sigma"] = parse_sigma(own_values["sigma"])
        flags = TaskOptions(task, **own_values)
        raise typer.Exit(run_restore(flags, RestoreRequest(**values)))

    inputs = inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               annotation=InputsArg)
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inputs, *own, *_shared_options(task)])
    command.__name__ = task
    command.__doc__ = TASKS[task].help
    app.command(epilog=COMMAND_EXAMPLES[task])(command)


for _task in TASKS:
    _restore_command(_task)
