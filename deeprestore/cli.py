"""The ``deeprestore`` command line (Typer).

The CLI only parses arguments, loads presets, builds jobs and hands them to the engine through
:mod:`deeprestore.jobs`; progress is drawn from the engine's callback. Every user error is one
line on stderr and a non-zero exit code (2: usage, 1: an image failed), never a traceback
(unless ``--debug``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import shlex
import signal
import sys
import threading
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from deeprestore import __version__
from deeprestore.control import Interrupted
from deeprestore.cost import CostError, parse_bytes
from deeprestore.execution import bf16_warning
from deeprestore.huge_pages import request_huge_pages
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
from deeprestore.presets import PresetError, available_presets, load_preset, parse_override
from deeprestore.progress import add_run, err_console, progress_bar
from deeprestore.resolve import SettingsResolver
from deeprestore.settings import SettingsError
from deeprestore.tasks import (
    AUTO_SIGMA,
    DEFAULT_SIGMA,
    TASK_METHODS,
    TASKS,
    TaskError,
    TaskOptionError,
    TaskOptions,
    check_task_options,
    read_sidecar,
)

EXAMPLES_DENOISE = """
[b]Examples[/b]

  deeprestore denoise noisy.png             [dim]# DeepRED, Table 1; σ estimated; stops itself[/dim]
  deeprestore denoise noisy.png --method dip --iters 3000 -o out/  [dim]# exactly 3000[/dim]
  deeprestore denoise noisy.png --reference clean.png --json
  deeprestore denoise photo.jpg --method dip --precision float32
  deeprestore denoise big.png --tile 512 --max-minutes 60
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

_ARGV: list[str] = []  # the command line, for manifests



def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name`` from each Click found: older Typer raises the click
    package's, newer Typer its vendored ``typer._click`` (which may be there alongside)."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_EXIT_ERRORS: tuple[type[BaseException], ...] = (*_click_errors("Exit"), typer.Exit)
_ABORT_ERRORS: tuple[type[BaseException], ...] = (*_click_errors("Abort"), typer.Abort)
_CLICK_ERRORS = _click_errors("ClickException")


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
RestoreItersOpt = Annotated[
    str | None, typer.Option(
        "--iters", metavar="N|auto",
        help="Number of iterations (overrides the preset), or auto (the default): stop when "
        "the network outputs settle (moving variance, no reference needed) with the preset's "
        "count as the ceiling; the manifest says where and why it stopped.",
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
ThreadsOpt = Annotated[str, typer.Option(
    "--threads", help="CPU threads of torch: a number, or auto (one per core, fewer when other "
    "work keeps cores busy at the start; OMP_NUM_THREADS wins if set).", metavar="N|auto")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON manifest per image.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Redo images whose outputs already exist.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.", hidden=True)]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="Network arithmetic: float32 (as the paper), tf32 or bf16 "
                 "(autocast; x and u stay float32). Default: the preset's (float32). bf16 can be "
                 "0.35–0.6× or 14× the time of float32 on the same CPU (docs/performance.md).",
                 show_default=False),
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
TileOpt = Annotated[
    str, typer.Option(
        "--tile", metavar="SIZE|auto",
        help="Restore in overlapping tiles of about SIZE input pixels a side (plus the "
        "overlap, SIZE/8), blended without seams, each tile its own run; auto: only when the "
        "whole image is predicted not to fit in memory, with the largest tile that fits.")
]
MaxMinutesOpt = Annotated[
    float | None, typer.Option(
        "--max-minutes", min=0, help="Refuse (one line, nothing written) an image whose run "
        "is expected to take longer; the expectation comes from one step timed at its size.",
        show_default=False)
]
MaxMemoryOpt = Annotated[
    str | None, typer.Option(
        "--max-memory", metavar="SIZE", help="Memory a run may use (e.g. 4GB; the device's "
        "available memory always bounds it): a larger image is restored in tiles that fit "
        "(--tile auto), else refused in one line.",
        show_default=False)
]


def _apply_threads(text: str, quiet: bool) -> None:
    """Set torch's thread count from ``--threads`` (say so when a busy machine lowers it)."""
    import torch

    from deeprestore.threads import AUTO_THREADS, choose_thread_count

    value: str | int = text.strip().lower()
    if value != AUTO_THREADS:
        try:
            value = int(value)
        except ValueError:
            raise UsageProblem(f"--threads: expected a number or {AUTO_THREADS}, got "
                               f"{text!r}") from None
    try:
        count, reason = choose_thread_count(value)
    except ValueError as err:
        raise UsageProblem(str(err)) from None
    if count is None:
        return
    torch.set_num_threads(count)
    if reason != "asked for" and not quiet:
        err_console.print(f"note: {count} torch thread{'s' if count > 1 else ''} ({reason}; "
                          f"--threads sets it)", soft_wrap=True, markup=False)


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


def _check_flags(flags: TaskOptions) -> None:
    """The task options' values (whatever the image): a usage error naming the flag."""
    try:
        check_task_options(flags)
    except TaskOptionError as err:
        raise UsageProblem(f"--{err.option}: {err}") from None


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
    max_minutes: MaxMinutesOpt = None
    max_memory: MaxMemoryOpt = None
    checkpoint_every: CheckpointEveryOpt = None
    resume: ResumeOpt = False
    debug: DebugOpt = False

    def overrides(self) -> dict[str, Any]:
        """The settings the flags change: ``--set`` pairs, then the flags named after settings."""
        values: dict[str, Any] = dict(parse_override(text) for text in (self.sets or []))
        values.update(_iteration_overrides(self.iters))
        for key, value in (("runs", self.runs),
                           ("seed", self.seed), ("precision", self.precision)):
            if value is not None:
                values[key] = value
        if self.compile_network:
            values["compile"] = True
        return values


def _iteration_overrides(text: str | None) -> dict[str, Any]:
    """``--iters N`` → ``iterations = N``; ``--iters auto`` → ``stop = "auto"``."""
    if text is None:
        return {}
    if text.strip().lower() == "auto":
        return {"stop": "auto"}
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageProblem(f"--iters: expected a number ≥ 1 or auto, got {text!r}")
    return {"iterations": count}


#: problems per grouped step of ``reproduce --group auto`` on CUDA
GPU_GROUP = 16


def _group_size(text: str, device: Any) -> int:
    """``--group N`` → N (≥ 1); ``auto`` → :data:`GPU_GROUP` on CUDA, 1 elsewhere."""
    if text.strip().lower() == "auto":
        return GPU_GROUP if device.type == "cuda" else 1
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise UsageProblem(f"--group: expected a number ≥ 1 or auto, got {text!r}")
    return size


def _tile_size(text: str) -> int | None:
    """``--tile SIZE`` → SIZE (at least the smallest image side); ``auto`` → None."""
    from deeprestore.images import MIN_SIDE

    if text.strip().lower() == "auto":
        return None
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < MIN_SIDE:
        raise UsageProblem(f"--tile: expected a size of at least {MIN_SIDE} px or auto, got "
                           f"{text!r}")
    return size


def run_restore(flags: TaskOptions, request: RestoreRequest) -> int:
    """Restore every input of ``request`` with one method.

    Task options come from the flags, then the input's ``degrade`` sidecar, then the preset's
    ``[degradation]`` table (:mod:`deeprestore.resolve`). Returns the exit code: 0 all done,
    1 an image failed, 2 an image did not fit the task options (wrong-size mask, kernel larger
    than the image, ...).
    """
    task, method, quiet = flags.task, request.method, request.quiet
    _check_flags(flags)
    device = _resolve_device(request.device)
    resolver = SettingsResolver(task, method, request.overrides(), request.denoiser, device,
                                everyday=True)
    # a bad preset is a usage error before any work
    _, first, _ = resolver.resolve(flags, request.preset)
    warning = bf16_warning(first, device)
    if warning is not None and not quiet:
        err_console.print(f"warning: {warning}", soft_wrap=True, markup=False)
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
    tile = _tile_size(request.tile)
    files = _expand_inputs(request.inputs, request.recursive, request.shard)
    command = "deeprestore " + shlex.join(_ARGV)
    _apply_threads(request.threads, quiet)  # last: after every usage error

    tty = sys.stdout.isatty()
    failures = usage_failures = 0
    for entry in files:
        path, out_dir = entry.path, request.output / entry.subdir
        try:
            sidecar = read_sidecar(path)
            if sidecar.get("task") not in (None, task):
                sidecar = {}
            known = flags.merged(sidecar, source_names=("sidecar",))
            preset, settings, options = resolver.resolve(known, request.preset)
            job = Job(
                input=path, output_dir=out_dir, method=method, settings=settings, task=options,
                preset=preset.name, reference=reference, device=device, command=command,
                overwrite=request.overwrite, compare=not request.no_compare,
                max_pixels=pixel_limit, checkpoint_every=request.checkpoint_every,
                resume=request.resume, max_memory=memory_limit, max_minutes=request.max_minutes,
                tile=tile, auto_tile=tile is None,
            )
            existing = check_outputs(job)
            if existing and not request.overwrite:
                if not quiet:
                    err_console.print(
                        f"{path}: skipped, {existing[0]} exists (use --overwrite to redo)",
                        soft_wrap=True, markup=False,
                    )
                continue
            manifest = _run_with_progress(job, quiet=quiet or not tty, notices=not quiet)
        except TaskError as err:
            usage_failures += 1
            err_console.print(f"deeprestore: error: {path}: {err}", soft_wrap=True, markup=False)
            record_failure(out_dir, path, method, f"{path}: {err}")
            continue
        except (ImageError, JobError, ValueError, FloatingPointError, OSError) as err:
            failures += 1
            err_console.print(f"deeprestore: error: {err}", soft_wrap=True, markup=False)
            # stderr only: an unwritable folder or full disk, or a run refused before it began
            if not isinstance(err, (OSError, CostError)):
                record_failure(out_dir, path, method, str(err))
            continue
        if request.as_json:
            sys.stdout.write(json.dumps(manifest) + "\n")
            sys.stdout.flush()
        if not quiet:
            line = _summary_line(manifest)
            if request.as_json:
                err_console.print(line, soft_wrap=True, markup=False)
            else:
                print(line, flush=True)
    return 2 if usage_failures else (1 if failures else 0)


def _run_with_progress(job: Job, quiet: bool, notices: bool) -> dict[str, Any]:
    def notice(text: str) -> None:
        err_console.print(text, soft_wrap=True, markup=False)

    tell = notice if notices else None
    if quiet:
        return run_job(job, notice=tell)
    with progress_bar() as bar:
        update = add_run(bar, f"{job.input.name} {job.method}", job.settings.iterations)
        return run_job(job, callback=update, notice=tell)


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

EXAMPLES_DEGRADE = """
[b]Examples[/b]

  deeprestore degrade clean.png -o in/ --task denoise --sigma 25
  deeprestore degrade clean.png -o in/ --task deblur --kernel gauss25
  deeprestore degrade clean.png -o in/ --task superres --factor 8
  deeprestore degrade clean.png -o in/ --task inpaint --mask holes:0.2 --seed 3
"""


def _option(name: str, annotation: Any, default: Any = inspect.Parameter.empty
            ) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def _shared_options(task: str) -> list[inspect.Parameter]:
    """The options of every restore command after its task's own: :class:`RestoreRequest`'s
    fields (one definition for all four commands)."""
    method_help = ", ".join(TASK_METHODS[task]) + "."
    declared = typing.get_type_hints(RestoreRequest, include_extras=True)
    declared["method"] = Annotated[str, typer.Option("--method", "-m", help=method_help)]
    return [_option(f.name, declared[f.name], f.default)
            for f in dataclasses.fields(RestoreRequest) if f.name != "inputs"]


def _sigma_option(task: str) -> inspect.Parameter:
    default = DEFAULT_SIGMA[task]
    shown = {"denoise": "auto (estimated, unless the input's .degrade.json sidecar says)",
             "deblur": "√2 ≈ 1.41"}.get(task, f"{default:g}")
    auto = "" if task == "inpaint" else ", or auto: estimated from the image"
    return _option("sigma", Annotated[str | None, typer.Option(
        "--sigma", help=f"Noise std of the input on the 0–255 scale{auto}. [default: {shown}]",
        show_default=False, metavar="SIGMA")], None)


def _parse_sigma(text: str | None) -> float | str | None:
    """``--sigma``: a number (0–255 scale), ``auto`` or None; anything else a usage error."""
    if text is None or text.strip().lower() == AUTO_SIGMA:
        return None if text is None else AUTO_SIGMA
    try:
        return float(text)
    except ValueError:
        raise UsageProblem(f"--sigma: expected a number (0–255 scale) or {AUTO_SIGMA}, got "
                           f"{text!r}") from None


#: Each restore command's own options (names are TaskOptions fields), before ``--sigma``.
TASK_OPTIONS: dict[str, list[inspect.Parameter]] = {
    "denoise": [],
    "deblur": [_option("kernel", Annotated[str | None, typer.Option(
        "--kernel", "-k", help="uniform9, gauss25 or a kernel file (.npy, .txt, .csv, grey PNG). "
        "[default: uniform9]", show_default=False)], None)],
    "superres": [
        _option("factor", Annotated[int | None, typer.Option(
            "--factor", "-f", help="Upscaling factor: 2, 4 or 8. [default: 4]",
            show_default=False)], None),
        _option("downsampler", Annotated[str | None, typer.Option(
            "--downsampler", help="H: lanczos2 (DIP's, default) or bicubic.",
            show_default=False)], None),
    ],
    "inpaint": [_option("mask", Annotated[str | None, typer.Option(
        "--mask", help="Mask image of the input's size: nonzero = known pixel, 0 = to fill in.",
        show_default=False)], None)],
}
COMMAND_HELP = {
    "denoise": ("Remove Gaussian noise (H = identity).", EXAMPLES_DENOISE),
    "deblur": ("Remove a known blur (H = circular convolution); σ defaults to √2 ≈ 1.41.",
               EXAMPLES_DEBLUR),
    "superres": ("Upscale by 2, 4 or 8 (H = DIP's Lanczos-2 downsampler); the output is "
                 "factor× larger.", EXAMPLES_SUPERRES),
    "inpaint": ("Fill in missing pixels (H = binary mask).", EXAMPLES_INPAINT),
}


def _restore_command(task: str) -> None:
    """Register ``deeprestore TASK``: its task options, ``--sigma`` and the shared options."""
    own = [*TASK_OPTIONS[task], _sigma_option(task)]
    own_names = [p.name for p in own]

    def command(**values: Any) -> None:
        own_values = {name: values.pop(name) for name in own_names}
        own_values["sigma"] = _parse_sigma(own_values["sigma"])
        flags = TaskOptions(task, **own_values)
        raise typer.Exit(run_restore(flags, RestoreRequest(**values)))

    inputs = inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               annotation=InputsArg)
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inputs, *own, *_shared_options(task)])
    command.__name__ = task
    command.__doc__, epilog = COMMAND_HELP[task]
    app.command(epilog=epilog)(command)


for _task in TASKS:
    _restore_command(_task)


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
    _check_flags(TaskOptions(task, sigma=sigma, kernel=kernel, factor=factor))
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
    threads: ThreadsOpt = "auto",
    budget_minutes: Annotated[float | None, typer.Option(
        "--budget-minutes", min=0, help="Stop inside this many minutes: print each table's "
        "plan (every pair's cost from one timed step per size), run pairs in order, and "
        "checkpoint the one running when time is up; exit code 3 then, and the same command "
        "continues.", show_default=False)] = None,
    group: Annotated[str, typer.Option(
        "--group", metavar="N|auto", help="Step up to N network problems of one size together "
        "(different images and methods, one grouped network; each result as if run alone). "
        "auto: 16 on CUDA, 1 (one by one) on a CPU, where grouping is not faster "
        "(docs/performance.md).")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Reproduce the DeepRED paper's tables (resumable): results.csv, results.md, grids."""
    from deeprestore.reproduce import (
        BudgetSpent,
        ReproduceError,
        ReproduceEvent,
        reproduce_table,
    )

    def split(text: str | None) -> list[str] | None:
        return [item.strip() for item in text.split(",") if item.strip()] if text else None

    resolved = _resolve_device(device)
    problems_per_step = _group_size(group, resolved)
    _apply_threads(threads, quiet)
    tty = sys.stderr.isatty() and not quiet

    failed: list[str] = []

    def progress(event: ReproduceEvent) -> None:
        if event.kind == "missing":
            err_console.print(f"warning: {event.message}", soft_wrap=True, markup=False)
        elif event.kind == "failed":
            failed.append(f"{event.table}/{event.image} {event.method}")
            err_console.print(f"error: {event.table}/{event.image} {event.method}: "
                              f"{event.message}", soft_wrap=True, markup=False)
        elif event.kind == "plan" and not quiet:
            err_console.print(f"plan: {event.table}/{event.image} {event.method}: "
                              f"{event.message}", soft_wrap=True, markup=False)
        elif event.kind == "note" and event.image is not None and not quiet:
            err_console.print(f"{event.table}/{event.image} {event.method}: {event.message}",
                              soft_wrap=True, markup=False)
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
            budget_minutes=budget_minutes, group=problems_per_step,
        )
    except ReproduceError as err:
        raise UsageProblem(str(err)) from None
    except BudgetSpent as spent:
        err_console.print(f"deeprestore: {spent}", soft_wrap=True, markup=False)
        raise typer.Exit(3) from None
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
    threads: ThreadsOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Denoise a bundled image (scikit-image's astronaut, 64×64 crop, σ = 25) with DeepRED."""
    from deeprestore.demo import run_demo

    _apply_threads(threads, quiet)
    run_demo(output, iterations=iters, device=_resolve_device(device), quiet=quiet)


@app.command()
def version() -> None:
    """Print the version of deeprestore and torch."""
    import torch

    print(f"deeprestore {__version__} (torch {torch.__version__})")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, exit codes 0/1/2, 130 on Ctrl-C, 143 on
    SIGTERM (outputs of the image in progress are not written; finished images are kept)."""
    request_huge_pages()  # before torch's first CPU allocation (deeprestore.huge_pages)
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
    except _CLICK_ERRORS as err:
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
        where = (f"; checkpoint saved to {stop.checkpoint} ({stop.hint})"
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
