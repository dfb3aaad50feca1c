"""The ``deeprestore`` command line (Typer).

The CLI only parses arguments, loads presets, builds jobs and hands them to the engine through
:mod:`deeprestore.jobs`; progress is drawn from the engine's callback. Every user error is one
line on stderr and a non-zero exit code (2: usage, 1: an image failed), never a traceback
(unless ``--debug``).
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deeprestore import __version__
from deeprestore.control import Interrupted
from deeprestore.engine import Progress as EngineProgress
from deeprestore.engine import cpu_has_native_bf16
from deeprestore.images import ImageError
from deeprestore.inputs import (
    InputError,
    InputFile,
    collect_inputs,
    parse_max_pixels,
    parse_shard,
    select_shard,
)
from deeprestore.jobs import Job, JobError, check_outputs, record_failure, run_job
from deeprestore.presets import (
    Preset,
    PresetError,
    available_presets,
    load_preset,
    parse_override,
)
from deeprestore.settings import Settings, SettingsError
from deeprestore.tasks import (
    TASK_METHODS,
    TaskError,
    TaskOptions,
    check_factor,
    load_blur_kernel,
    read_sidecar,
)

EXAMPLES_DENOISE = """
[b]Examples[/b]

  deeprestore denoise noisy.png                       [dim]# DeepRED, Table 1 preset[/dim]
  deeprestore denoise noisy.png --method dip --iters 3000 -o out/
  deeprestore denoise noisy.png --reference clean.png --json
  deeprestore denoise *.png --set lam=0.3 --set denoiser=bm3d --seed 1
"""

app = typer.Typer(
    name="deeprestore",
    help="Image restoration with Deep Image Prior, DIP-TV and DeepRED (DIP + RED, via ADMM).",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True, highlight=False)
_ARGV: list[str] = []  # the command line, for manifests

try:  # Typer < 0.20 uses the click package; newer Typer vendors it as typer._click.
    from click.exceptions import Abort as _ClickAbort
    from click.exceptions import ClickException as _ClickException
    from click.exceptions import Exit as _ClickExit

    _EXIT_ERRORS: tuple[type[BaseException], ...] = (_ClickExit, typer.Exit)
    _ABORT_ERRORS: tuple[type[BaseException], ...] = (_ClickAbort, typer.Abort)
except ImportError:  # pragma: no cover - depends on the Typer version installed
    from typer._click.exceptions import ClickException as _ClickException

    _EXIT_ERRORS = (typer.Exit,)
    _ABORT_ERRORS = (typer.Abort,)


class UsageProblem(Exception):
    """A usage error found after parsing: exit code 2, one line."""


def _raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM outside a run (a job scheduler stopping us): unwind like Ctrl-C, exit 143.

    Inside a run the engine's own handler stops between two iterations and saves a checkpoint.
    """
    raise Interrupted(signum)


# ---------------------------------------------------------------- options shared by subcommands
InputsArg = Annotated[
    list[Path], typer.Argument(help="Degraded image files, directories of images or glob "
                               "patterns (quote them: 'photos/*.jpg').",
                               show_default=False)
]
OutputOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Output directory (created if needed).")
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Preset name (see `deeprestore presets`) or path to a TOML file. "
        "Default: the task's Table 1 row.",
        show_default=False,
    ),
]
ItersOpt = Annotated[
    int | None, typer.Option("--iters", min=1, help="Number of iterations (overrides the preset).",
                             show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one preset value, KEY=VALUE (repeatable).",
                 show_default=False),
]
ReferenceOpt = Annotated[
    Path | None,
    typer.Option("--reference", help="Clean image, to log PSNR/SSIM while restoring.",
                 show_default=False),
]
RunsOpt = Annotated[
    int | None, typer.Option("--runs", min=1, help="Independent runs averaged (different z).",
                             show_default=False)
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.", show_default=False)]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")
]
DenoiserOpt = Annotated[
    str,
    typer.Option("--denoiser",
                 help="f(x) for deepred/red: auto, nlm, bm3d, nlm-torch, bm3d-torch "
                 "(auto: the preset's, in torch on CUDA)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON manifest per image.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Redo images whose outputs already exist.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.", hidden=True)]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="Network arithmetic: float32 (default, as the paper), tf32 "
                 "or bf16 (autocast; x and u stay float32).", show_default=False),
]
NoCompareOpt = Annotated[
    bool, typer.Option("--no-compare", help="Do not write NAME_METHOD_compare.png.")
]
CompileOpt = Annotated[
    bool, typer.Option("--compile", help="torch.compile the network (see docs/performance.md).")
]


RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Look for images in sub-folders of directory "
                       "inputs too (outputs keep the sub-folder layout under -o).")
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", help="Process only slice I of N of the sorted input list, I/N with "
                 "0 ≤ I < N (one per job-array task or GPU).", show_default=False),
]
CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option("--checkpoint-every", min=1, help="Also save NAME_METHOD.ckpt every N "
                 "iterations (preemptible jobs). Ctrl-C / SIGTERM always save one.",
                 show_default=False),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue each image from its NAME_METHOD.ckpt, if any.")
]
MaxPixelsOpt = Annotated[
    str, typer.Option("--max-pixels", help="Refuse larger images: WxH, a count, or 16M.")
]


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageProblem(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageProblem(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageProblem(f"--device {name}: no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageProblem(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return device


def _expand_inputs(inputs: list[Path], recursive: bool = False,
                   shard: str | None = None) -> list[InputFile]:
    try:
        files = collect_inputs(inputs, recursive=recursive)
        if shard is not None:
            files = select_shard(files, *parse_shard(shard))
    except InputError as err:
        raise UsageProblem(str(err)) from None
    return files


def _check_sigma(sigma: float | None) -> None:
    if sigma is not None and (math.isnan(sigma) or math.isinf(sigma) or sigma < 0):
        raise UsageProblem(f"--sigma must be a finite number ≥ 0 (0–255 scale), got {sigma}")


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("PSNR {task.fields[psnr]}"),
        TextColumn("{task.fields[speed]} it/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def _summary_line(manifest: dict[str, Any]) -> str:
    text = (
        f"{manifest['input']}: {manifest['method']} {manifest['iterations']} it "
        f"{manifest['seconds']:.1f} s -> {manifest['output']}"
    )
    if manifest.get("psnr") is not None:
        text += f"  PSNR {manifest['psnr']:.2f} dB"
        if manifest.get("psnr_input") is not None:
            text += f" (input {manifest['psnr_input']:.2f} dB)"
    return text


def default_preset(options: TaskOptions) -> str:
    """The Table 1 preset of a task (the blur or the factor picks the row)."""
    if options.task == "deblur":
        return "deblur-gauss" if options.kernel == "gauss25" else "deblur-uniform"
    if options.task == "superres":
        return "superres-x8" if options.factor == 8 else "superres-x4"
    return options.task


def _check_task_flags(flags: TaskOptions) -> None:
    """Flag values that are wrong whatever the image: usage errors (exit 2)."""
    if flags.factor is not None:
        try:
            check_factor(flags.factor)
        except TaskError as err:
            raise UsageProblem(f"--factor: {err}") from None
    if flags.kernel is not None and not Path(flags.kernel).exists():
        try:
            load_blur_kernel(flags.kernel)
        except TaskError as err:
            raise UsageProblem(f"--kernel: {err}") from None
    if flags.mask is not None and not Path(flags.mask).exists():
        raise UsageProblem(f"--mask: file not found: {flags.mask}")
    if flags.downsampler not in (None, "lanczos2", "bicubic"):
        raise UsageProblem(f"--downsampler must be lanczos2 or bicubic, got {flags.downsampler}")


def run_restore(
    flags: TaskOptions,
    inputs: list[Path],
    *,
    output: Path,
    method: str,
    preset_name: str | None,
    iters: int | None,
    sets: list[str] | None,
    reference: Path | None,
    runs: int | None,
    seed: int | None,
    device_name: str,
    denoiser: str,
    quiet: bool,
    as_json: bool,
    overwrite: bool,
    precision: str | None = None,
    compile_network: bool = False,
    compare: bool = True,
    recursive: bool = False,
    shard: str | None = None,
    max_pixels: str = "4096x4096",
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> int:
    """Restore every input with one method.

    Task options come from the flags, then the input's ``degrade`` sidecar, then the preset's
    ``[degradation]`` table. Returns the exit code: 0 all done, 1 an image failed, 2 an image
    did not fit the task options (wrong-size mask, kernel larger than the image, ...).
    """
    from deeprestore.denoisers import choose_denoiser

    task = flags.task
    _check_sigma(flags.sigma)
    _check_task_flags(flags)
    methods = TASK_METHODS[task]
    if method not in methods:
        raise UsageProblem(f"unknown method {method!r} for {task} (use {', '.join(methods)})")
    overrides: dict[str, Any] = dict(parse_override(text) for text in (sets or []))
    if iters is not None:
        overrides["iterations"] = iters
    if runs is not None:
        overrides["runs"] = runs
    if seed is not None:
        overrides["seed"] = seed
    if precision is not None:
        overrides["precision"] = precision
    if compile_network:
        overrides["compile"] = True
    device = _resolve_device(device_name)
    presets: dict[str, Preset] = {}

    def settings_for(name: str) -> tuple[Preset, Settings]:
        if name not in presets:
            preset = load_preset(name)
            if preset.task != task:
                raise UsageProblem(f"preset {preset.name!r} is for {preset.task}, not {task}")
            presets[name] = preset
        preset = presets[name]
        settings = preset.settings_for(method, overrides)
        try:
            if denoiser != "auto" or "denoiser" not in overrides:  # --set denoiser=X is exact
                settings.denoiser = choose_denoiser(denoiser, settings.denoiser, device)
        except ValueError as err:
            raise UsageProblem(str(err)) from None
        return preset, settings.validate()

    if preset_name is not None:
        _, first = settings_for(preset_name)  # a bad preset is a usage error before any work
    else:
        _, first = settings_for(default_preset(flags))
    if (first.precision == "bf16" and device.type == "cpu" and not quiet
            and not cpu_has_native_bf16()):
        err_console.print("warning: --precision bf16 on this CPU is likely very slow: it has no "
                          "bf16 arithmetic (AVX512-BF16 or AMX; such a CPU ran 37x slower than "
                          "float32: docs/performance.md); float32 is the default",
                          soft_wrap=True, markup=False)
    if reference is not None and not reference.exists():
        raise UsageProblem(f"{reference}: reference image not found")
    try:
        pixel_limit = parse_max_pixels(max_pixels)
    except InputError as err:
        raise UsageProblem(str(err)) from None
    files = _expand_inputs(inputs, recursive, shard)
    command = "deeprestore " + shlex.join(_ARGV)

    tty = sys.stdout.isatty()
    failures = usage_failures = 0
    for entry in files:
        path, out_dir = entry.path, output / entry.subdir
        try:
            sidecar = read_sidecar(path)
            if sidecar.get("task") not in (None, task):
                sidecar = {}
            known = flags.merged(sidecar, source_names=("sidecar",))
            preset, settings = settings_for(preset_name or default_preset(known))
            options = known.merged(preset.degradation, source_names=("preset",))
            job = Job(
                input=path, output_dir=out_dir, method=method, settings=settings, task=options,
                preset=preset.name, reference=reference, device=device, command=command,
                overwrite=overwrite, compare=compare, max_pixels=pixel_limit,
                checkpoint_every=checkpoint_every, resume=resume,
            )
            existing = check_outputs(job)
            if existing and not overwrite:
                if not quiet:
                    err_console.print(
                        f"{path}: skipped, {existing[0]} exists (use --overwrite to redo)",
                        soft_wrap=True, markup=False,
                    )
                continue
            manifest = _run_with_progress(job, quiet=quiet or not tty)
        except TaskError as err:
            usage_failures += 1
            err_console.print(f"deeprestore: error: {path}: {err}", soft_wrap=True, markup=False)
            record_failure(out_dir, path, method, f"{path}: {err}")
            continue
        except (ImageError, JobError, ValueError, FloatingPointError, OSError) as err:
            failures += 1
            err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
            if not isinstance(err, OSError):  # an unwritable folder or full disk: stderr only
                record_failure(out_dir, path, method, str(err))
            continue
        if as_json:
            sys.stdout.write(json.dumps(manifest) + "\n")
            sys.stdout.flush()
        if not quiet:
            line = _summary_line(manifest)
            if as_json:
                err_console.print(line, soft_wrap=True, markup=False)
            else:
                print(line, flush=True)
    return 2 if usage_failures else (1 if failures else 0)


def _run_with_progress(job: Job, quiet: bool) -> dict[str, Any]:
    if quiet:
        return run_job(job)
    with _progress_bar() as bar:
        task_id = bar.add_task(
            f"{job.input.name} {job.method}", total=job.settings.iterations,
            loss="-", psnr="-", speed="-",
        )

        def update(event: EngineProgress) -> None:
            speed = event.iteration / event.seconds if event.seconds > 0 else 0.0
            bar.update(
                task_id,
                completed=event.iteration,
                total=event.total,
                loss=f"{event.loss:.3g}",
                psnr="-" if event.psnr is None else f"{event.psnr:.2f}",
                speed=f"{speed:.1f}",
            )

        return run_job(job, callback=update)


# ---------------------------------------------------------------- subcommands
@app.command(epilog=EXAMPLES_DENOISE)
def denoise(
    inputs: InputsArg,
    output: OutputOpt = Path("restored"),
    method: Annotated[
        str, typer.Option("--method", "-m", help="deepred, dip, dip-tv, red, nlm or bm3d.")
    ] = "deepred",
    sigma: Annotated[
        float | None,
        typer.Option("--sigma", help="Noise std of the input on the 0–255 scale. [default: 25]",
                     show_default=False),
    ] = None,
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    sets: SetOpt = None,
    reference: ReferenceOpt = None,
    runs: RunsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    denoiser: DenoiserOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    precision: PrecisionOpt = None,
    compile_network: CompileOpt = False,
    no_compare: NoCompareOpt = False,
    recursive: RecursiveOpt = False,
    shard: ShardOpt = None,
    max_pixels: MaxPixelsOpt = "4096x4096",
    checkpoint_every: CheckpointEveryOpt = None,
    resume: ResumeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Remove Gaussian noise (H = identity)."""
    code = run_restore(
        TaskOptions("denoise", sigma=sigma), inputs, output=output, method=method,
        preset_name=preset, iters=iters, sets=sets, reference=reference, runs=runs, seed=seed,
        device_name=device, denoiser=denoiser, quiet=quiet, as_json=as_json, overwrite=overwrite,
        precision=precision, compile_network=compile_network, compare=not no_compare,
        recursive=recursive, shard=shard, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every, resume=resume,
    )
    raise typer.Exit(code)


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

EXAMPLES_DEGRADE = """
[b]Examples[/b]

  deeprestore degrade clean.png -o in/ --task denoise --sigma 25
  deeprestore degrade clean.png -o in/ --task deblur --kernel gauss25
  deeprestore degrade clean.png -o in/ --task superres --factor 8
  deeprestore degrade clean.png -o in/ --task inpaint --mask holes:0.2 --seed 3
"""

SigmaOpt = Annotated[
    float | None,
    typer.Option("--sigma", help="Noise std of the input on the 0–255 scale.", show_default=False),
]


def _method_option(task: str) -> Any:
    return typer.Option("--method", "-m", help=", ".join(TASK_METHODS[task]) + ".")


@app.command(epilog=EXAMPLES_DEBLUR)
def deblur(
    inputs: InputsArg,
    kernel: Annotated[
        str | None,
        typer.Option("--kernel", "-k", help="uniform9, gauss25 or a kernel file (.npy, .txt, "
                     ".csv, grey PNG). [default: uniform9]", show_default=False),
    ] = None,
    sigma: SigmaOpt = None,
    output: OutputOpt = Path("restored"),
    method: Annotated[str, _method_option("deblur")] = "deepred",
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    sets: SetOpt = None,
    reference: ReferenceOpt = None,
    runs: RunsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    denoiser: DenoiserOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    precision: PrecisionOpt = None,
    compile_network: CompileOpt = False,
    no_compare: NoCompareOpt = False,
    recursive: RecursiveOpt = False,
    shard: ShardOpt = None,
    max_pixels: MaxPixelsOpt = "4096x4096",
    checkpoint_every: CheckpointEveryOpt = None,
    resume: ResumeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Remove a known blur (H = circular convolution); σ defaults to √2 ≈ 1.41."""
    code = run_restore(
        TaskOptions("deblur", sigma=sigma, kernel=kernel), inputs, output=output, method=method,
        preset_name=preset, iters=iters, sets=sets, reference=reference, runs=runs, seed=seed,
        device_name=device, denoiser=denoiser, quiet=quiet, as_json=as_json, overwrite=overwrite,
        precision=precision, compile_network=compile_network, compare=not no_compare,
        recursive=recursive, shard=shard, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every, resume=resume,
    )
    raise typer.Exit(code)


@app.command(epilog=EXAMPLES_SUPERRES)
def superres(
    inputs: InputsArg,
    factor: Annotated[
        int | None,
        typer.Option("--factor", "-f", help="Upscaling factor: 2, 4 or 8. [default: 4]",
                     show_default=False),
    ] = None,
    downsampler: Annotated[
        str | None,
        typer.Option("--downsampler", help="H: lanczos2 (DIP's, default) or bicubic.",
                     show_default=False),
    ] = None,
    sigma: SigmaOpt = None,
    output: OutputOpt = Path("restored"),
    method: Annotated[str, _method_option("superres")] = "deepred",
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    sets: SetOpt = None,
    reference: ReferenceOpt = None,
    runs: RunsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    denoiser: DenoiserOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    precision: PrecisionOpt = None,
    compile_network: CompileOpt = False,
    no_compare: NoCompareOpt = False,
    recursive: RecursiveOpt = False,
    shard: ShardOpt = None,
    max_pixels: MaxPixelsOpt = "4096x4096",
    checkpoint_every: CheckpointEveryOpt = None,
    resume: ResumeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Upscale by 2, 4 or 8 (H = DIP's Lanczos-2 downsampler); the output is factor× larger."""
    code = run_restore(
        TaskOptions("superres", sigma=sigma, factor=factor, downsampler=downsampler), inputs,
        output=output, method=method, preset_name=preset, iters=iters, sets=sets,
        reference=reference, runs=runs, seed=seed, device_name=device, denoiser=denoiser,
        quiet=quiet, as_json=as_json, overwrite=overwrite,
        precision=precision, compile_network=compile_network, compare=not no_compare,
        recursive=recursive, shard=shard, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every, resume=resume,
    )
    raise typer.Exit(code)


@app.command(epilog=EXAMPLES_INPAINT)
def inpaint(
    inputs: InputsArg,
    mask: Annotated[
        str | None,
        typer.Option("--mask", help="Mask image of the input's size: nonzero = known pixel, "
                     "0 = to fill in.", show_default=False),
    ] = None,
    sigma: SigmaOpt = None,
    output: OutputOpt = Path("restored"),
    method: Annotated[str, _method_option("inpaint")] = "deepred",
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    sets: SetOpt = None,
    reference: ReferenceOpt = None,
    runs: RunsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    denoiser: DenoiserOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    precision: PrecisionOpt = None,
    compile_network: CompileOpt = False,
    no_compare: NoCompareOpt = False,
    recursive: RecursiveOpt = False,
    shard: ShardOpt = None,
    max_pixels: MaxPixelsOpt = "4096x4096",
    checkpoint_every: CheckpointEveryOpt = None,
    resume: ResumeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fill in missing pixels (H = binary mask)."""
    code = run_restore(
        TaskOptions("inpaint", sigma=sigma, mask=mask), inputs, output=output, method=method,
        preset_name=preset, iters=iters, sets=sets, reference=reference, runs=runs, seed=seed,
        device_name=device, denoiser=denoiser, quiet=quiet, as_json=as_json, overwrite=overwrite,
        precision=precision, compile_network=compile_network, compare=not no_compare,
        recursive=recursive, shard=shard, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every, resume=resume,
    )
    raise typer.Exit(code)


@app.command(epilog=EXAMPLES_DEGRADE)
def degrade(
    inputs: Annotated[list[Path], typer.Argument(help="Clean image file(s) or directories.",
                                                 show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path(
        "degraded"
    ),
    task: Annotated[str, typer.Option("--task", "-t", help="denoise, deblur, superres or "
                                      "inpaint.")] = "denoise",
    sigma: Annotated[
        float | None,
        typer.Option("--sigma", help="Noise std, 0–255 scale. [default: 25 denoise, √2 deblur, "
                     "0 superres/inpaint]", show_default=False),
    ] = None,
    kernel: Annotated[str | None, typer.Option("--kernel", "-k", help="deblur: uniform9, "
                                               "gauss25 or a file. [default: uniform9]",
                                               show_default=False)] = None,
    factor: Annotated[int | None, typer.Option("--factor", "-f", help="superres: 2, 4 or 8. "
                                               "[default: 4]", show_default=False)] = None,
    mask: Annotated[str | None, typer.Option("--mask", help="inpaint: PATH, text, random:P or "
                                             "holes:P (P = missing fraction). [default: "
                                             "random:0.5]", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise and random masks.")] = 0,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    recursive: RecursiveOpt = False,
    shard: ShardOpt = None,
) -> None:
    """Make degraded inputs exactly as the papers did, with a NAME.degrade.json sidecar."""
    from deeprestore.degrade import degrade_file
    from deeprestore.tasks import TASKS

    if task not in TASKS:
        raise UsageProblem(f"unknown task {task!r} (use {', '.join(TASKS)})")
    _check_sigma(sigma)
    _check_task_flags(TaskOptions(task, kernel=kernel, factor=factor))
    if mask is not None and ":" not in mask and mask != "text" and not Path(mask).exists():
        raise UsageProblem(f"--mask: file not found: {mask}")
    failures = usage_failures = 0
    for entry in _expand_inputs(inputs, recursive, shard):
        path, out_dir = entry.path, output / entry.subdir
        try:
            params = degrade_file(path, out_dir, task, sigma=sigma, kernel=kernel, factor=factor,
                                  mask=mask, seed=seed, overwrite=overwrite)
        except FileExistsError as err:
            if not quiet:
                err_console.print(f"{path}: skipped, {err}", soft_wrap=True, markup=False)
            continue
        except TaskError as err:
            usage_failures += 1
            err_console.print(f"deeprestore: error: {path}: {err}", soft_wrap=True, markup=False)
            continue
        except (ImageError, ValueError, OSError) as err:
            failures += 1
            err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
            continue
        if as_json:
            print(json.dumps(params), flush=True)
        elif not quiet:
            print(f"{path}: {task} -> {out_dir / params['image']}", flush=True)
    raise typer.Exit(2 if usage_failures else (1 if failures else 0))


EXAMPLES_REPRODUCE = """
[b]Examples[/b]

  deeprestore reproduce denoise --data ../shared/data --quick --images house,peppers -o out/
  deeprestore reproduce superres-x4 --data ../shared/data --device cuda
  deeprestore reproduce all --data ../shared/data --quick            [dim]# every table[/dim]
"""


@app.command(epilog=EXAMPLES_REPRODUCE)
def reproduce(
    table: Annotated[str, typer.Argument(help="denoise, superres-x4, superres-x8, "
                                         "deblur-uniform, deblur-gauss, inpaint or all.")],
    data: Annotated[Path, typer.Option("--data", help="Folder with cbm3d9/, set5/, set14/, "
                                       "ncsr4/ (the layout of shared/data).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path(
        "reproduce"
    ),
    methods: Annotated[str | None, typer.Option("--methods", help="Comma-separated methods "
                                                "(default: all of the table).",
                                                show_default=False)] = None,
    images: Annotated[str | None, typer.Option("--images", help="Comma-separated image names "
                                               "(default: all of the table).",
                                               show_default=False)] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Centre crops and -quick presets (minutes on a CPU; "
                           "not comparable to the paper).")
    ] = False,
    device: DeviceOpt = "auto",
    runs: RunsOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed (image i is degraded with "
                                      "seed + i).")] = 0,
    iters: ItersOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Redo finished (image, method) "
                                        "pairs.")] = False,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Warn about missing "
                                               "images and mark their rows instead of "
                                               "failing.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Reproduce the DeepRED paper's tables (resumable): results.csv, results.md, grids."""
    from deeprestore.reproduce import ReproduceError, ReproduceEvent, reproduce_table

    def split(text: str | None) -> list[str] | None:
        return [item.strip() for item in text.split(",") if item.strip()] if text else None

    resolved = _resolve_device(device)
    tty = sys.stderr.isatty() and not quiet

    failed: list[str] = []

    def progress(event: ReproduceEvent) -> None:
        if event.kind == "missing":
            err_console.print(f"warning: {event.message}", soft_wrap=True, markup=False)
        elif event.kind == "failed":
            failed.append(f"{event.table}/{event.image} {event.method}")
            err_console.print(f"error: {event.table}/{event.image} {event.method}: "
                              f"{event.message}", soft_wrap=True, markup=False)
        elif event.kind in ("done", "skip") and not quiet:
            where = f"{event.table}/{event.image} {event.method}"
            psnr = (event.manifest or {}).get("psnr")
            note = "skipped (done before)" if event.kind == "skip" else (
                f"PSNR {psnr:.2f} dB" if psnr is not None else "done")
            err_console.print(f"{where}: {note}", soft_wrap=True, markup=False)
        elif event.kind == "table" and tty:
            err_console.print(f"[bold]{event.table}[/bold] {event.message or ''}",
                              soft_wrap=True)

    try:
        results = reproduce_table(
            table, data, output, methods=split(methods), images=split(images), quick=quick,
            device=resolved, runs=runs, seed=seed, force=force, skip_missing=skip_missing,
            command="deeprestore " + shlex.join(_ARGV), progress=progress, iterations=iters,
        )
    except ReproduceError as err:
        raise UsageProblem(str(err)) from None
    print(f"results: {results}")
    if failed:
        raise typer.Exit(1)


@app.command()
def plot(
    csvs: Annotated[list[Path], typer.Argument(help="Run logs (NAME_METHOD.csv).",
                                               show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path(
        "runs.png"
    ),
) -> None:
    """Plot loss (log scale) and PSNR against iteration, one line per run (needs matplotlib)."""
    from deeprestore.plots import PlotError, PlotUnavailable, plot_runs

    for path in csvs:
        if not path.exists():
            raise UsageProblem(f"{path}: no such file")
    try:
        print(plot_runs(csvs, output))
    except (PlotUnavailable, PlotError) as err:
        raise UsageProblem(str(err)) from None


@app.command()
def summary(
    folder: Annotated[Path, typer.Argument(help="Output folder of a batch (searched at any "
                                           "depth for manifests).", show_default=False)],
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Where to write the CSV. "
                                                  "[default: FOLDER/summary.csv]",
                                                  show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Merge a finished batch's manifests into one CSV and a table (exit 1 if any failed)."""
    from rich.table import Table

    from deeprestore.summary import write_summary

    if not folder.is_dir():
        raise UsageProblem(f"{folder}: not a directory")
    rows, target = write_summary(folder, csv_path)
    if not rows:
        raise UsageProblem(f"{folder}: no deeprestore manifests found")
    if not quiet:
        table = Table(title=f"{folder}: {len(rows)} runs")
        for column in ("input", "method", "status", "PSNR dB", "seconds"):
            table.add_column(column, justify="right" if column in ("PSNR dB", "seconds") else
                             "left")
        for row in rows:
            table.add_row(
                row["input"], row["method"],
                "[red]failed[/red]" if row["status"] == "failed" else "done",
                "" if row["psnr"] is None else f"{row['psnr']:.2f}",
                "" if row["seconds"] is None else f"{row['seconds']:.1f}",
            )
        Console().print(table)
        for row in rows:
            if row["status"] == "failed":
                err_console.print(f"failed: {row['error']}", soft_wrap=True, markup=False)
    print(f"summary: {target}")
    raise typer.Exit(1 if any(row["status"] == "failed" for row in rows) else 0)


@app.command("presets")
def presets_command(
    name: Annotated[str | None, typer.Argument(help="Preset to print (omit to list all).")] = None,
) -> None:
    """List the presets, or print one (copy it, edit it, pass it with --preset)."""
    if name is not None:
        preset = load_preset(name)
        sys.stdout.write(preset.text)
        return
    from rich.table import Table

    table = Table("name", "task", "description", box=None, pad_edge=False)
    for preset_name, path in available_presets().items():
        preset = load_preset(path)
        table.add_row(preset_name, preset.task, preset.description)
    Console().print(table)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("demo"),
    iters: ItersOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Denoise a bundled image (scikit-image's astronaut, 64×64 crop, σ = 25) with DeepRED."""
    from deeprestore.demo import run_demo

    run_demo(output, iterations=iters, device=_resolve_device(device), quiet=quiet)


@app.command()
def version() -> None:
    """Print the version of deeprestore and torch."""
    import torch

    print(f"deeprestore {__version__} (torch {torch.__version__})")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, exit codes 0/1/2, 130 on Ctrl-C, 143 on
    SIGTERM (outputs of the image in progress are not written; finished images are kept)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = args
    debug = "--debug" in args
    command = typer.main.get_command(app)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = command.main(args=args, prog_name="deeprestore", standalone_mode=False)
        if code == 130:  # newer Click turns Ctrl-C into a return value of 130 by itself
            err_console.print("deeprestore: interrupted", soft_wrap=True)
    except _EXIT_ERRORS as stop:
        code = getattr(stop, "exit_code", 0)
    except _ClickException as err:
        if type(err).__name__ == "NoArgsIsHelpError" and getattr(err, "ctx", None) is not None:
            print(err.ctx.get_help())  # type: ignore[attr-defined]
            code = 0
        else:
            message = " ".join(err.format_message().split())
            err_console.print(f"deeprestore: error: {message}", soft_wrap=True, markup=False)
            code = 2
    except _ABORT_ERRORS:
        err_console.print("deeprestore: interrupted", soft_wrap=True)
        code = 130
    except KeyboardInterrupt:
        err_console.print("deeprestore: interrupted", soft_wrap=True)
        code = 130
    except Interrupted as stop:
        word = "terminated" if stop.signum == signal.SIGTERM else "interrupted"
        where = (f"; checkpoint saved to {stop.checkpoint} (rerun with --resume to continue)"
                 if stop.checkpoint is not None else "")
        err_console.print(f"deeprestore: {word}{where}", soft_wrap=True, markup=False)
        code = 128 + stop.signum
    except (UsageProblem, PresetError, SettingsError, ImageError, TaskError, JobError) as err:
        if debug:
            raise
        err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
        code = 2
    except OSError as err:
        if debug:
            raise
        err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
