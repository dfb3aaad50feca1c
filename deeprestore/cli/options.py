"""The options the subcommands share, declared once, and their parsers."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from deeprestore.cli.app import UsageProblem
from deeprestore.cli.progress import err_console
from deeprestore.io.inputs import InputError, InputFile, collect_inputs, parse_shard, select_shard
from deeprestore.tasks.options import AUTO_SIGMA, TaskOptionError, TaskOptions, check_task_options
from deeprestore.tasks.registry import TASKS

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
        "Default: the task's Table 1 row, with its \\[everyday] table on top (denoise: a "
        "32-channel network, several times cheaper per step than the paper's 128 channels; "
        "--set net_channels=128 for the paper's; docs/photos.md).",
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
                 "(auto: the preset's, in torch on CUDA). With --method nlm/bm3d: its "
                 "implementation (auto: the reference package; e.g. bm3d-torch)."),
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
    typer.Option("--precision", metavar="auto|float32|bf16|tf32",
                 help="Network arithmetic (x, u and the denoiser stay float32): auto — a network "
                 "step is timed in float32 and bf16 (channels-last) before the run and bf16 kept "
                 "where it is at least 1.25x faster (CPUs with AVX512-BF16 or AMX), else "
                 "float32; the cost line and the manifest say which; float32: the paper's; "
                 "bf16; tf32 (CUDA). Default: auto for denoise, float32 for the other tasks "
                 "(bf16's effect on their quality is not established) and for reproduce "
                 "(docs/performance.md).", show_default=False),
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
        "is expected to take longer (default: a day), naming what would fit; the expectation "
        "comes from one step timed at its size (a large image's: on a crop, scaled).",
        show_default=False)
]
MaxMemoryOpt = Annotated[
    str | None, typer.Option(
        "--max-memory", metavar="SIZE", help="Memory a run may use (e.g. 4GB; the device's "
        "available memory always bounds it): a larger image is restored in tiles that fit "
        "(--tile auto), else refused in one line.",
        show_default=False)
]


def apply_threads(text: str, quiet: bool) -> None:
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


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        from deeprestore.execution import auto_device

        return auto_device()
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


def expand_inputs(inputs: list[Path], recursive: bool = False,
                   shard: str | None = None) -> list[InputFile]:
    try:
        files = collect_inputs(inputs, recursive=recursive)
        if shard is not None:
            files = select_shard(files, *parse_shard(shard))
    except InputError as err:
        raise UsageProblem(str(err)) from None
    return files


def check_flags(flags: TaskOptions) -> None:
    """The task options' values (whatever the image): a usage error naming the flag."""
    try:
        check_task_options(flags)
    except TaskOptionError as err:
        raise UsageProblem(f"--{err.option}: {err}") from None


def iteration_overrides(text: str | None) -> dict[str, Any]:
    """``--iters N`` → ``iterations = N``; ``--iters auto`` → ``stop = "auto"``."""
    if text is None:
        return {}
    count = count_or_auto("--iters", text)
    return {"stop": "auto"} if count is None else {"iterations": count}


#: at most this many problems per grouped step of ``reproduce --group auto`` on CUDA (fewer
#: when their predicted peaks do not fit the GPU's memory together: apps.jobs.run_jobs_together)
GPU_GROUP = 16


def group_size(text: str, device: Any) -> int:
    """``--group N`` → N (≥ 1); ``auto`` → :data:`GPU_GROUP` on CUDA, 1 elsewhere."""
    size = count_or_auto("--group", text)
    if size is None:
        return GPU_GROUP if device.type == "cuda" else 1
    return size


def tile_size(text: str) -> int | None:
    """``--tile SIZE`` → SIZE (at least the smallest image side); ``auto`` → None."""
    from deeprestore.io.images import MIN_SIDE

    return count_or_auto("--tile", text, least=MIN_SIDE,
                         expected=f"a size of at least {MIN_SIDE} px")


def count_or_auto(flag: str, text: str, *, least: int = 1, expected: str = "a number ≥ 1"
                  ) -> int | None:
    """The value ``text`` of ``flag``: None for ``auto``, else a whole number ≥ ``least``; a
    usage error saying ``expected`` otherwise."""
    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = least - 1
    if count < least:
        raise UsageProblem(f"{flag}: expected {expected} or auto, got {text!r}")
    return count


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty
            ) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def sigma_option(task: str) -> inspect.Parameter:
    facts = TASKS[task]
    shown = facts.default_sigma_text or f"{facts.default_sigma:g}"
    if facts.sigma_estimated_by_default:
        shown = "auto (estimated, unless the input's .degrade.json sidecar says)"
    auto = "" if not facts.sigma_estimable else (", or auto: estimated from the image (a "
                                                 "JPEG's: the noise left after compression)")
    return option("sigma", Annotated[str | None, typer.Option(
        "--sigma", help=f"Noise std of the input on the 0–255 scale{auto}. [default: {shown}]",
        show_default=False, metavar="SIGMA")], None)


def parse_sigma(text: str | None) -> float | str | None:
    """``--sigma``: a number (0–255 scale), ``auto`` or None; anything else a usage error."""
    if text is None or text.strip().lower() == AUTO_SIGMA:
        return None if text is None else AUTO_SIGMA
    try:
        return float(text)
    except ValueError:
        raise UsageProblem(f"--sigma: expected a number (0–255 scale) or {AUTO_SIGMA}, got "
                           f"{text!r}") from None
