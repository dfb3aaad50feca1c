"""Seconds per step, peak memory and the PSNR change of each precision, at the full preset.

    python bench/preset_steps.py methods [--device cuda] [--preset denoise] [--size 512]
        [--methods dip,dip-tv,deepred] [--precisions float32,tf32,bf16] [--iters 50]
        [--warmup 10] [--set KEY=VALUE ...] [--json PATH]
    python bench/preset_steps.py grouped [--device cuda] [--sizes 256,512] [--problems 1,4,16]
        [--precisions float32,tf32,bf16] [--iters 5] [--warmup 2] [--set KEY=VALUE ...]
        [--json PATH]
    python bench/preset_steps.py digest --out DIR      (one line per result of gpu_check.sh)

The settings are the preset's own (``Preset.settings_for(method)`` without the ``[everyday]``
table: Table 1's network of 128 channels, DIP's 2 runs, DeepRED's growth rule and lagged
denoiser, a fixed iteration count), as ``reproduce`` runs them; only ``precision`` (and what
``--set`` gives, recorded in the JSON) changes. DeepRED's denoiser follows the device as in a
run (``--denoiser auto``: ``nlm-torch`` on CUDA, ``nlm`` on a CPU). The backends are configured
as a run configures them (:func:`~deeprestore.execution.configure_backends`).

``methods``: one problem per method (scikit-image's astronaut resized to ``--size``, σ of the
preset's ``[degradation]``, fixed seed) and precision: ``--warmup`` iterations (cuDNN
autotuning, DeepRED's first denoiser call) then ``--iters`` timed ones. Row: seconds per
iteration, peak CUDA memory (reset before each row), the PSNR of the output (the preset's
``ema``) and of the last network output against the clean image, and their change against the
same method in float32 (same seed, same iterations), plus the PSNR of the output against the
float32 output (how far the precision moves it).

``grouped``: for each precision, size and N, N problems (four scikit-image photos in turn, own
noise seeds) with the methods in turn, stepped one after the other ("separate") and as one
:class:`~deeprestore.solvers.grouping.ProblemGroup` ("grouped", as ``reproduce --group``), one
way after the other, each freed before the next (``bench/grouped.py``'s ``measure_ways``).
Row: seconds per round and per problem-iteration, the grouped/separate ratio, each way's peak
memory, the mean PSNR of the outputs and its change against float32, and the largest difference
between the two ways' outputs.

``--json``: one file for both parts (each part replaces its own key, ``methods`` or
``grouped``, and keeps the other); it is rewritten after every row, so a run stopped by a time
limit keeps what it measured. A row that fails (out of memory, say) is recorded with its error
and the next one runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeprestore.config.presets import load_preset, parse_override
from deeprestore.config.settings import Settings
from deeprestore.denoisers import choose_denoiser
from deeprestore.execution import Execution, configure_backends
from deeprestore.metrics import psnr_rgb
from deeprestore.solvers.base import Problem, problem_to_device
from deeprestore.solvers.factory import make_algorithm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grouped import free_memory, measure_ways, peak_mib, reset_peak, sync  # noqa: E402
from speed import make_problem  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # shipped with scikit-image


def photo_problem(name: str, size: int, sigma: float, seed: int) -> Problem:
    """scikit-image's ``name`` resized to size × size with N(0, σ²) noise (0–255 scale)."""
    return make_problem(size, sigma, seed, image=name)


def preset_settings(preset: Any, method: str, precision: str, sets: dict[str, Any],
                    denoiser: str, device: torch.device) -> Settings:
    """The preset's settings for ``method`` (no ``[everyday]``) in ``precision``."""
    settings = preset.settings_for(method, {**sets, "precision": precision}, everyday=False)
    if "denoiser" not in sets:
        settings.denoiser = choose_denoiser(denoiser, settings.denoiser, device)
    return settings.validate()


def psnr(estimate: torch.Tensor | None, reference: torch.Tensor | None) -> float | None:
    if estimate is None or reference is None:
        return None
    value = float(psnr_rgb(estimate.detach().float().clamp(0, 1).cpu(), reference.cpu()))
    return value if np.isfinite(value) else None


def delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def failed(row: dict[str, Any], label: str, err: Exception) -> None:
    """Record ``err`` in ``row`` and say so (the next row runs)."""
    row["error"] = f"{type(err).__name__}: {err}"
    print(f"{label}: {row['error']}", flush=True)


def write_part(path: Path | None, key: str, value: Any, info: dict[str, Any]) -> None:
    """Replace ``key`` in the JSON at ``path`` (keeping the other parts), atomically."""
    if path is None:
        return
    try:
        whole = json.loads(path.read_text())
    except (OSError, ValueError):
        whole = {}
    whole.setdefault("info", {}).update(info)
    whole[key] = value
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(whole, indent=1) + "\n")
    os.replace(tmp, path)


def run_info(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(), "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": args.preset, "set": args.set,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def methods_part(args: argparse.Namespace, device: torch.device, preset: Any,
                 sets: dict[str, Any]) -> None:
    sigma = float(preset.degradation.get("sigma", 25.0))
    photo = photo_problem("astronaut", args.size, sigma, 0)
    problem = problem_to_device(photo, device)
    clean = photo.reference
    part: dict[str, Any] = {"size": args.size, "sigma": sigma, "warmup": args.warmup,
                            "iters": args.iters, "psnr_input": psnr(problem.y, clean),
                            "settings": {}, "rows": []}
    info = run_info(device, args)
    # precision first: a time limit keeps the float32 rows of every method and step graph
    cases = [(method, precision, graph) for precision in args.precisions.split(",")
             for method in args.methods.split(",") for graph in args.step_graphs.split(",")]
    bases: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    for method, precision, graph in cases:
        base, base_estimate = bases.get(method, (None, None))
        row: dict[str, Any] = {"method": method, "precision": precision, "size": args.size,
                               "step_graph": graph}
        print(f"methods: {method} {precision} {graph} ...", flush=True)
        try:
            settings = preset_settings(preset, method, precision, sets, args.denoiser,
                                       device)
            if precision == "float32" or method not in part["settings"]:
                part["settings"][method] = dataclasses.asdict(settings)
            configure_backends(device, precision)
            free_memory(device)
            tic = time.perf_counter()
            algorithm = make_algorithm(problem, settings, device,
                                       execution=Execution(step_graph=graph))
            for _ in range(args.warmup):
                algorithm.update()
            sync(device)
            setup = time.perf_counter() - tic
            warm_peak = peak_mib(device)  # cuDNN's autotuning included
            reset_peak(device)
            tic = time.perf_counter()
            for _ in range(args.iters):
                algorithm.update()
            sync(device)
            seconds = (time.perf_counter() - tic) / max(args.iters, 1)
            estimate = algorithm.estimate().detach().float().clamp(0, 1).cpu()
            network = algorithm.network_output()
            row.update({
                "denoiser": settings.denoiser if method == "deepred" else None,
                "net_channels": settings.net_channels, "runs": settings.runs,
                "s_per_it": seconds, "its_per_s": 1 / seconds if seconds > 0 else None,
                "setup_s": setup, "peak_mib": peak_mib(device),
                "peak_warmup_mib": warm_peak,
                "psnr": psnr(estimate, clean),
                "psnr_network": psnr(network, clean),
            })
            algorithm.close()
            del algorithm, network
            if base is None and precision == "float32":  # the first step graph's
                base, base_estimate = row, estimate
                bases[method] = (row, estimate)
            if base is not None and base is not row:
                row["d_psnr_vs_float32"] = delta(row["psnr"], base["psnr"])
                row["d_psnr_network_vs_float32"] = delta(row["psnr_network"],
                                                         base["psnr_network"])
                row["psnr_vs_float32_output"] = psnr(estimate, base_estimate)
                row["s_per_it_vs_float32"] = seconds / base["s_per_it"]
            print(f"methods: {method} {precision} {graph}: {seconds:.4f} s/it, peak "
                  f"{row['peak_mib']} MiB, PSNR {row['psnr']}", flush=True)
        except Exception as err:  # noqa: BLE001 - recorded; the next row runs
            failed(row, f"methods: {method} {precision} {graph}", err)
        part["rows"].append(row)
        write_part(args.json, "methods", part, info)
        free_memory(device)


def grouped_part(args: argparse.Namespace, device: torch.device, preset: Any,
                 sets: dict[str, Any]) -> None:
    sigma = float(preset.degradation.get("sigma", 25.0))
    methods = args.methods.split(",")
    part: dict[str, Any] = {"sigma": sigma, "warmup": args.warmup, "iters": args.iters,
                            "repeats": args.repeats, "methods": methods, "rows": []}
    info = run_info(device, args)
    float32: dict[tuple[int, int], dict[str, Any]] = {}
    for precision in args.precisions.split(","):
        for size in (int(v) for v in args.sizes.split(",")):
            for count in (int(v) for v in args.problems.split(",")):
                row: dict[str, Any] = {"precision": precision, "size": size, "problems": count}
                print(f"grouped: {precision} {size} px, {count} problems ...", flush=True)
                try:
                    cases = []
                    for i in range(count):
                        problem = photo_problem(PHOTOS[i % len(PHOTOS)], size, sigma, 100 + i)
                        moved = problem_to_device(problem, device)
                        settings = preset_settings(preset, methods[i % len(methods)], precision,
                                                   sets, args.denoiser, device)
                        cases.append((moved, settings))
                    ways = measure_ways(cases, args.iters, args.repeats, args.warmup, device)
                    sep, grp = ways["separate"], ways["grouped"]
                    psnr_mean = float(np.mean([p for p in grp["psnr"] if p is not None]))
                    row.update({
                        "methods": [s.method for _, s in cases],
                        "networks": sum(s.runs for _, s in cases),
                        "separate_s_per_round": sep["s_per_round"],
                        "grouped_s_per_round": grp["s_per_round"],
                        "grouped_s_per_problem_it": grp["s_per_round"] / count,
                        "grouped_problem_its_per_s": count / grp["s_per_round"],
                        "ratio": grp["s_per_round"] / sep["s_per_round"],
                        "peak_mib": {"separate": sep["peak_mib"], "grouped": grp["peak_mib"]},
                        "setup_s": {"separate": sep["setup_s"], "grouped": grp["setup_s"]},
                        "psnr_mean": psnr_mean, "psnr": grp["psnr"],
                        "max_abs_diff_separate_grouped": ways["max_abs_diff"],
                    })
                    if precision == "float32":
                        float32[size, count] = {"psnr_mean": psnr_mean,
                                                "estimates": grp["estimates"]}
                    elif (size, count) in float32:
                        base = float32[size, count]
                        row["d_psnr_vs_float32"] = psnr_mean - base["psnr_mean"]
                        row["max_abs_diff_vs_float32"] = max(
                            float((a - b).abs().max())
                            for a, b in zip(grp["estimates"], base["estimates"], strict=True))
                    print(f"grouped: {precision} {size} px, {count} problems: "
                          f"{row['grouped_s_per_round']:.4f} s/round grouped, ratio "
                          f"{row['ratio']:.2f}, peak {row['peak_mib']} MiB", flush=True)
                except Exception as err:  # noqa: BLE001 - recorded; the next row runs
                    failed(row, f"grouped: {precision} {size} {count}", err)
                part["rows"].append(row)
                write_part(args.json, "grouped", part, info)
                with contextlib.suppress(NameError):
                    del cases
                free_memory(device)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rows(path: Path, key: str | None = None) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return (data.get(key) or {}).get("rows", []) if key else data.get("rows", [])


def digest(out: Path) -> None:
    """One line per result of bench/gpu_check.sh's folder ``out`` (its stdout's last lines)."""
    for r in _rows(out / "measure.json", "methods"):
        print(f"methods {r['method']:8s} {r['precision']:8s} "
              f"{r.get('step_graph', 'eager'):10s} " + (r.get("error") or (
            f"{_num(r['s_per_it'], 4)} s/it  peak {_num(r['peak_mib'], 0)} MiB  PSNR "
            f"{_num(r['psnr'], 2)}  vs float32 {_num(r.get('d_psnr_vs_float32'))} dB")))
    for r in _rows(out / "measure.json", "grouped"):
        print(f"grouped {r['precision']:8s} {r['size']:4d} px N={r['problems']:2d} " + (
            r.get("error") or (
                f"separate {_num(r['separate_s_per_round'], 4)} grouped "
                f"{_num(r['grouped_s_per_round'], 4)} s/round  ratio {_num(r['ratio'], 2)}  "
                f"peak {_num(r['peak_mib']['separate'], 0)} / "
                f"{_num(r['peak_mib']['grouped'], 0)} MiB  vs float32 "
                f"{_num(r.get('d_psnr_vs_float32'))} dB")))
    for r in _rows(out / "denoisers.json"):
        print(f"denoiser {r['denoiser']:10s} {r.get('device', '?'):6s} " + (
            r.get("error") or f"{_num(r['seconds'], 4)} s  {_num(r['psnr'], 2)} dB"))
    suite = out / "suite.txt"
    lines = suite.read_text(errors="replace").splitlines() if suite.exists() else []
    print("suite:", lines[-1] if lines else "no output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("methods", "grouped", "digest"),
                        help="digest: print one line per result in --out (gpu_check.sh)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="denoise")
    parser.add_argument("--methods", default="dip,dip-tv,deepred")
    parser.add_argument("--denoiser", default="auto",
                        help="DeepRED's denoiser: auto (the preset's, its torch version on "
                             "CUDA) or a name")
    parser.add_argument("--precisions", default="float32,tf32,bf16")
    parser.add_argument("--step-graphs", default="eager",
                        help="methods: how the step executes (Execution.step_graph), comma-"
                             "separated: eager, cuda-graph, compile; the first one's float32 "
                             "row is the base of the PSNR and time ratios")
    parser.add_argument("--size", type=int, default=512, help="methods: the image size")
    parser.add_argument("--sizes", default="256,512", help="grouped: image sizes")
    parser.add_argument("--problems", default="1,4,16", help="grouped: problems per step")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed iterations (methods: 50; grouped: 5 rounds per repeat)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="discarded iterations first (methods: 10; grouped: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="grouped: timed repeats")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a preset setting (recorded), e.g. net_channels=8")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("."), help="digest: the folder")
    args = parser.parse_args()
    if args.part == "digest":
        digest(args.out)
        return
    if args.iters is None:
        args.iters = 50 if args.part == "methods" else 5
    if args.warmup is None:
        args.warmup = 10 if args.part == "methods" else 2
    device = torch.device(args.device)
    preset = load_preset(args.preset)
    sets = dict(parse_override(text) for text in args.set)
    if "precision" in sets:
        parser.error("--set precision: use --precisions")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    print(f"{args.part}: device {device}, torch {torch.__version__}, preset {preset.name} "
          f"(no [everyday]), set {sets or 'nothing'}", flush=True)
    if args.part == "methods":
        methods_part(args, device, preset, sets)
    else:
        grouped_part(args, device, preset, sets)


if __name__ == "__main__":
    main()
