"""The other subcommands: degrade, reproduce, plot, summary, presets, demo, version."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deeprestore import __version__
from deeprestore.cli.app import COMMAND_LINE, UsageProblem, app, check_output_folder
from deeprestore.cli.failures import INPUT_ERRORS, BatchFailures
from deeprestore.cli.options import (
    DeviceOpt,
    ItersOpt,
    JsonOpt,
    OverwriteOpt,
    QuietOpt,
    RecursiveOpt,
    RunsOpt,
    ShardOpt,
    ThreadsOpt,
    apply_threads,
    check_flags,
    expand_inputs,
    group_size,
    resolve_device,
)
from deeprestore.cli.progress import ReproducePrinter, run_progress, tell
from deeprestore.config.presets import available_presets, load_preset
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.registry import DENOISE

EXAMPLES_DEGRADE = """
[b]Examples[/b]

  deeprestore degrade clean.png -o in/ --task denoise --sigma 25
  deeprestore degrade clean.png -o in/ --task deblur --kernel gauss25
  deeprestore degrade clean.png -o in/ --task superres --factor 8
  deeprestore degrade clean.png -o in/ --task inpaint --mask holes:0.2 --seed 3
"""



@app.command(epilog=EXAMPLES_DEGRADE)
def degrade(
    inputs: Annotated[list[Path], typer.Argument(help="Clean image file(s) or directories.",
                                                 show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path(
        "degraded"
    ),
    task: Annotated[str, typer.Option("--task", "-t", help="denoise, deblur, superres or "
                                      "inpaint.")] = DENOISE.name,
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
    from deeprestore.apps.degrade import degrade_file
    from deeprestore.tasks.registry import TASKS

    if task not in TASKS:
        raise UsageProblem(f"unknown task {task!r} (use {', '.join(TASKS)})")
    check_flags(TaskOptions(task, sigma=sigma, kernel=kernel, factor=factor))
    if mask is not None and ":" not in mask and mask != "text" and not Path(mask).exists():
        raise UsageProblem(f"--mask: file not found: {mask}")
    failures = BatchFailures()
    check_output_folder(output)
    for entry in expand_inputs(inputs, recursive, shard):
        path, out_dir = entry.path, output / entry.subdir
        try:
            params = degrade_file(path, out_dir, task, sigma=sigma, kernel=kernel, factor=factor,
                                  mask=mask, seed=seed, overwrite=overwrite)
        except FileExistsError as err:
            if not quiet:
                tell(f"{path}: skipped, {err}")
            continue
        except INPUT_ERRORS as err:
            failures.report(path, err)
            continue
        if as_json:
            print(json.dumps(params), flush=True)
        elif not quiet:
            print(f"{path}: {task} -> {out_dir / params['image']}", flush=True)
    raise typer.Exit(failures.exit_code)


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
        "(docs/performance.md). A group whose predicted memory exceeds the GPU's is stepped "
        "in smaller groups, and one that runs out of memory halves itself.")] = "auto",
    precision: Annotated[str | None, typer.Option(
        "--precision", metavar="float32|bf16|tf32|auto", help="The network methods' arithmetic "
        "(default: the presets' float32, the paper's; bf16 or auto to measure what bf16 "
        "changes).", show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Reproduce the DeepRED paper's tables (resumable): results.csv, results.md, grids."""
    from deeprestore.apps.reproduce import (
        BudgetSpent,
        ReproduceError,
        ReproduceOptions,
        reproduce_table,
    )

    def split(text: str | None) -> list[str] | None:
        return [item.strip() for item in text.split(",") if item.strip()] if text else None

    check_output_folder(output)
    resolved = resolve_device(device)
    problems_per_step = group_size(group, resolved)
    apply_threads(threads, quiet)
    printer = ReproducePrinter(quiet=quiet, headings=sys.stderr.isatty() and not quiet)
    try:
        options = ReproduceOptions(
            methods=split(methods), images=split(images), quick=quick, device=resolved,
            runs=runs, seed=seed, force=force, skip_missing=skip_missing,
            command="deeprestore " + shlex.join(COMMAND_LINE), iterations=iters,
            budget_minutes=budget_minutes, group=problems_per_step, precision=precision,
        )
        results = reproduce_table(table, data, output, options, progress=printer)
    except ReproduceError as err:
        raise UsageProblem(str(err)) from None
    except BudgetSpent as spent:
        tell(f"deeprestore: {spent}")
        raise typer.Exit(3) from None
    print(f"results: {results}")
    if printer.failed:
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
    from deeprestore.io.plots import PlotError, PlotUnavailable, plot_runs

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

    from deeprestore.apps.summary import write_summary

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
                tell(f"failed: {row['error']}")
    print(f"summary: {target}")
    raise typer.Exit(1 if any(row["status"] == "failed" for row in rows) else 0)


@app.command("presets")
def presets_command(
    name: Annotated[str | None, typer.Argument(help="Preset to print (omit to list all).")] = None,
) -> None:
    """List the presets and the denoisers (--denoiser, plugins included), or print one preset
    (copy it, edit it, pass it with --preset)."""
    if name is not None:
        preset = load_preset(name)
        sys.stdout.write(preset.text)
        return
    from rich.table import Table

    from deeprestore.denoisers import denoiser_names, get_denoiser

    table = Table("name", "task", "description", box=None, pad_edge=False)
    for preset_name, path in available_presets().items():
        preset = load_preset(path)
        table.add_row(preset_name, preset.task, preset.description)
    Console().print(table)
    denoisers = Table("denoiser (--denoiser)", "runs on", "description", box=None,
                      pad_edge=False)
    for denoiser_name in denoiser_names():
        found = get_denoiser(denoiser_name)
        denoisers.add_row(denoiser_name, found.device_kind, found.description)
    Console().print(denoisers)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("demo"),
    iters: ItersOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Denoise a bundled image (scikit-image's astronaut, 64×64 crop, σ = 25) with DeepRED."""
    from deeprestore.apps.demo import run_demo

    check_output_folder(output)
    apply_threads(threads, quiet)
    run_demo(output, iterations=iters, device=resolve_device(device), quiet=quiet,
             progress=None if quiet else run_progress)


@app.command()
def version() -> None:
    """Print the version of deeprestore and torch."""
    import torch

    print(f"deeprestore {__version__} (torch {torch.__version__})")
