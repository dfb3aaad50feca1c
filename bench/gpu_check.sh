#!/usr/bin/env bash
# shellcheck disable=SC2054  # commas inside option values (--sizes 256,512), not array separators
# The GPU checks of the open issues in one device call of at most 10 minutes (the script itself
# stays under TOTAL_S = 450 s): steps in order of value, each under its own `timeout`, each
# writing its result into $OUT as it finishes, and going on after a failure.
#
#   bash bench/gpu_check.sh              on the GPU machine, from the repository root
#                                        (device call: carry .whl and .data, timeout_s ≈ 540)
#   bash bench/gpu_check.sh --dry-run    the same steps on a CPU with tiny sizes (about 1–2 min;
#                                        tests/test_gpu_check.py runs it)
#
# $OUT (the device tool's folder; bench/results/gpu-check otherwise, a new temporary folder for
# --dry-run) receives at most 8 files, each written as its step finishes:
#   steps.md         one table row per step, appended as each ends: step, result (ok / failed /
#                    timed out / skipped), seconds, limit, exit code, note
#   info.txt         (a) environment: date, nproc, nvidia-smi, Python, torch / CUDA / cuDNN, the
#                    GPU, bf16 support, which packages are there (bm3d?) and from where
#   suite.txt        (b) the test suite on CUDA (DEEPRESTORE_TEST_DEVICE=cuda, xdist workers,
#                    without this script's own test): pytest's output, failures, skips and the
#                    slowest tests; stopped by SIGINT at its limit, so it still prints its summary
#   measure.json     (c) bench/preset_steps.py, the full `denoise` preset (Table 1, no
#                    [everyday]): "methods": deepred (nlm-torch) and dip at 512² in float32,
#                    bf16 and tf32, each eager and as a captured CUDA graph (Execution
#                    step_graph, issue 42), 5 + 30 iterations each: s/it, peak memory (after the
#                    warm-up, and with it: cuDNN's autotuning), PSNR and its change vs float32
#                    (same seed, same iterations);
#                    "grouped": 1, 4, 16 problems (dip, dip-tv, deepred in turn) at 256² in
#                    float32, one after the other vs one grouped network (2 + 5 rounds each):
#                    s/round, peak memory of each way
#                    (the file is rewritten after every row: a timeout keeps what finished)
#   profile.txt      (c') bench/profile_step.py: DIP at 256², Table 1's network, float32, 20
#                    profiled steps after 5, eager then as a captured CUDA graph: top ops by
#                    host time, top kernels by device time, wall vs device-busy time (host gaps)
#   denoisers.json   (d) bench/denoisers.py at 512²: nlm-torch, bm3d-torch on the GPU, then the
#                    CPU nlm and bm3d (the latter only when importable); one row per denoiser,
#                    written as it finishes, a failing one recorded with its error
#   reproduce.tar.gz (e) `deeprestore reproduce denoise` at full protocol (Table 1 presets,
#                    whole images, --group auto: 16 problems per step) for the network methods
#                    (REPRO_METHODS=all: the whole table) under --budget-minutes of the time
#                    left (exit 3, budget spent, counts as ok): its results.md / results.csv,
#                    manifests and logs (*.md, *.csv, *.json, *.txt; no images, no
#                    checkpoints), and reproduce.txt (its output: the plan, each pair's cost)
#   log.txt          every other step's output
#
# Steps in order, and their limits in seconds on the GPU (variables below, each can be set from
# the environment): wheels WHEELS_S=30 (bm3d, bm4d, PyWavelets, pypng from ./.whl into /tmp/site, only
# when bm3d does not import), env ENV_S=25, suite SUITE_S=200 (SUITE_WORKERS=8 xdist workers),
# methods METHODS_S=100, grouped GROUPED_S=75, profile PROFILE_S=40, denoisers DENOISERS_S=25,
# reproduce (what is left of TOTAL_S=450 after FILES_S and DIGEST_S; its --budget-minutes that less REPRO_START_S=30;
# skipped under MIN_REPRO_S=45, i.e. only when the steps before use nearly all their limits),
# reproduce-files FILES_S=15 (the tar), then a digest of the results on stdout (DIGEST_S=15,
# bench/preset_steps.py digest). Every limit is `timeout -k 5` (the suite: SIGINT, then KILL 10 s
# later). The data for (e) is $DATA/cbm3d9 (DATA=.data: a copy of ../shared/data/cbm3d9,
# carried). On stdout: one line per step as it ends, then the digest and steps.md.
#
# --dry-run: DEVICE=cpu, 32 px, 2 timed iterations, net_channels 8 (--set, recorded), float32
# and bf16, groups of 1 and 2, one test of the suite, denoisers at 32 px without the `bm3d`
# package (its first call alone takes seconds), `reproduce --quick` on one 64 px image (house,
# from .data or ../shared/data, else a synthetic one) with 3 methods and 2 iterations; every
# step and every result file as on the GPU.
set -u
set -o pipefail

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    -h | --help) sed -n '3,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
START=$SECONDS

PY=${PYTHON:-python3}
WHEELS_S=${WHEELS_S:-30}
FILES_S=${FILES_S:-15}
DIGEST_S=${DIGEST_S:-15}
MIN_REPRO_S=${MIN_REPRO_S:-45}
REPRO_START_S=${REPRO_START_S:-30}  # reproduce's start-up and last checkpoint, not in its budget
if [ "$DRY" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # logic, not speed: no OpenMP spin on a busy CPU
    DEVICE=${DEVICE:-cpu}
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX")}
    TOTAL_S=${TOTAL_S:-170}
    ENV_S=${ENV_S:-60}
    SUITE_S=${SUITE_S:-90}
    METHODS_S=${METHODS_S:-90}
    GROUPED_S=${GROUPED_S:-90}
    DENOISERS_S=${DENOISERS_S:-60}
    PROFILE_S=${PROFILE_S:-60}
    PROFILE_ARGS=(--size 32 --channels 8 --precision float32 --steps 2 --warmup 1 --top 8)
    SUITE_ARGS=(tests/test_operators.py::test_describe_is_json_serialisable)
    TINY=(--iters 2 --warmup 1 --precisions float32,bf16 --set net_channels=8)
    METHODS_ARGS=(--size 32 --methods dip,deepred --step-graphs eager,cuda-graph "${TINY[@]}")
    GROUPED_ARGS=(--sizes 32 --problems 1,2 --methods deepred,dip "${TINY[@]}")
    DENOISERS_ARGS=(--sizes 32 --repeats 1 --reference-repeats 1 --no-reference-warmup)
    REFERENCE_DENOISERS=nlm  # the bm3d package's first call takes 10 s here
    REPRO_ARGS=(--quick --images house --methods input,nlm,dip --iters 2 --group 2)
else
    DEVICE=${DEVICE:-cuda}
    OUT=${OUT:-bench/results/gpu-check}
    TOTAL_S=${TOTAL_S:-450}
    ENV_S=${ENV_S:-25}
    # tuned on the first run (H200; docs/notes/first-gpu-session.md): the suite took 165 s;
    # each new (method, precision) at 512² spent ~20 s in its warm-up (cuDNN autotuning), so
    # 55 s held two rows and 65 s two grouped rows: fewer rows, more time, float32 grouped
    SUITE_S=${SUITE_S:-185}
    METHODS_S=${METHODS_S:-100}
    GROUPED_S=${GROUPED_S:-75}
    DENOISERS_S=${DENOISERS_S:-25}
    PROFILE_S=${PROFILE_S:-40}
    PROFILE_ARGS=(--size 256 --channels 128 --precision float32 --steps 20 --warmup 5 --top 12)
    SUITE_ARGS=(--ignore=tests/test_gpu_check.py tests)
    METHODS_ARGS=(--size 512 --methods deepred,dip --precisions float32,bf16,tf32
                  --step-graphs eager,cuda-graph --iters 30 --warmup 5)
    GROUPED_ARGS=(--sizes 256 --problems 1,4,16 --precisions float32
                  --iters 5 --warmup 2)
    DENOISERS_ARGS=(--sizes 512 --repeats 3 --reference-repeats 1 --no-reference-warmup)
    REFERENCE_DENOISERS=nlm,bm3d
    # The network methods only by default: the table's CPU baselines (the bm3d package: tens of
    # seconds per image) would spend the budget before the first grouped GPU step;
    # REPRO_METHODS=all runs the whole table.
    REPRO_METHODS=${REPRO_METHODS:-dip,dip-tv,deepred}
    REPRO_ARGS=(--group auto)
    [ "$REPRO_METHODS" = all ] || REPRO_ARGS+=(--methods "$REPRO_METHODS")
fi
DATA=${DATA:-.data}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -f "$OUT"/{steps.md,info.txt,suite.txt,measure.json,denoisers.json,reproduce.tar.gz,log.txt}
export PYTHONUNBUFFERED=1
export DEEPRESTORE_GPU_CHECK=1  # tests/test_gpu_check.py skips itself inside the suite step
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"

printf '| step | result | seconds | limit | exit | note |\n|---|---|---|---|---|---|\n' \
    > "$OUT/steps.md"
echo "gpu_check $([ "$DRY" = 1 ] && echo '--dry-run ')on $DEVICE into $OUT" | tee -a "$LOG"

row() {  # row STEP RESULT SECONDS LIMIT EXIT [NOTE]: one line of steps.md, now
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$OUT/steps.md"
    echo "step $1: $2 ($3 s, limit $4 s, exit $5) ${6:-}" | tee -a "$LOG"
}

step() {  # step NAME LIMIT [--ok=CODES] [--signal=SIG] [--log=FILE] [--note=TEXT] COMMAND...
    local name=$1 limit=$2 ok=0 signal=TERM log=$LOG note="" kill_after=5
    shift 2
    while :; do
        case ${1:-} in
            --ok=*) ok=${1#--ok=} ;;
            --signal=*) signal=${1#--signal=}; kill_after=10 ;;
            --log=*) log=${1#--log=} ;;
            --note=*) note=${1#--note=} ;;
            *) break ;;
        esac
        shift
    done
    if [ "$limit" -lt 1 ]; then
        row "$name" skipped 0 "$limit" - "no time left"
        return 0
    fi
    printf '\n=== %s (limit %s s, %s): %s\n' "$name" "$limit" "$(date -u +%T)" "$*" >> "$LOG"
    [ "$log" = "$LOG" ] || echo "(output in $(basename "$log"))" >> "$LOG"
    local start=$SECONDS status result
    timeout -k "$kill_after" -s "$signal" "$limit" "$@" >> "$log" 2>&1 < /dev/null
    status=$?
    local seconds=$((SECONDS - start))
    if [ "$status" -eq 124 ] || { [ "$status" -eq 137 ] && [ "$seconds" -ge "$limit" ]; }; then
        result="timed out"
    elif [[ ",$ok," == *",$status,"* ]]; then
        result=ok
    else
        result=failed
    fi
    row "$name" "$result" "$seconds" "$limit" "$status" "$note"
}

imports() {  # imports MODULE: whether Python imports it (bounded too)
    timeout -k 2 20 "$PY" -c "import $1" > /dev/null 2>&1
}

# --- wheels: the bm3d package and its dependencies, and pypng (16-bit PNG), when missing (the
# suite works without bm3d; without pypng the 16-bit tests fail: 2026-12-04 on the H200)
if imports bm3d && imports png; then
    row wheels ok 0 "$WHEELS_S" 0 "bm3d and png importable: nothing to install"
elif compgen -G ".whl/*.whl" > /dev/null; then
    step wheels "$WHEELS_S" "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    [ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"
else
    row wheels skipped 0 "$WHEELS_S" - "bm3d missing and no .whl/*.whl"
fi

# --- (a) environment
env_info() {
    date -u
    echo "nproc $(nproc --all) (usable here: $(nproc), OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset})"
    echo "PYTHONPATH $PYTHONPATH"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,power.limit \
            --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - <<'EOF'
import importlib
import importlib.metadata as metadata
import platform
import sys

print("python", sys.version.split()[0], platform.platform())
import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      "threads", torch.get_num_threads())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", props.name, f"{props.total_memory / 2**30:.1f} GiB", "capability",
          f"{props.major}.{props.minor}", "bf16", torch.cuda.is_bf16_supported(),
          "devices", torch.cuda.device_count())
else:
    print("gpu: none (torch.cuda.is_available() is False)")
for name, dist in (("bm3d", "bm3d"), ("bm4d", "bm4d"), ("pywt", "PyWavelets"), ("png", "pypng"),
                   ("numpy", "numpy"), ("scipy", "scipy"), ("skimage", "scikit-image"),
                   ("imageio", "imageio"), ("typer", "typer"), ("rich", "rich"),
                   ("matplotlib", "matplotlib"), ("pytest", "pytest"), ("xdist", "pytest-xdist"),
                   ("hypothesis", "hypothesis")):
    try:
        module = importlib.import_module(name)
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = getattr(module, "__version__", "?")
        print(f"{name:10s} {version:12s} {module.__file__}")
    except Exception as err:  # noqa: BLE001
        print(f"{name:10s} missing: {type(err).__name__}: {err}")
EOF
    git log -1 --format='commit %H %cd %s' 2>/dev/null && git status --short 2>/dev/null | head -40
    return 0
}
export -f env_info
export PY
step env "$ENV_S" --log="$OUT/info.txt" bash -c env_info

# --- (b) the test suite on the device
# SIGINT at the limit: pytest then prints what failed so far and its summary line.
PYTEST_MAIN='import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import pytest
sys.exit(pytest.main(sys.argv[1:]))'
suite=(-o addopts= -p no:cacheprovider -rfEsxX --durations=20)
if [ "$DRY" = 0 ] && imports xdist; then
    suite+=(-n "${SUITE_WORKERS:-8}" --dist loadgroup)
fi
step suite "$SUITE_S" --signal=INT --log="$OUT/suite.txt" \
    env DEEPRESTORE_TEST_DEVICE="$DEVICE" "$PY" -c "$PYTEST_MAIN" "${suite[@]}" "${SUITE_ARGS[@]}"

# --- (c) the full preset per method and precision, then grouped problems
step methods "$METHODS_S" "$PY" bench/preset_steps.py methods --device "$DEVICE" \
    "${METHODS_ARGS[@]}" --json "$OUT/measure.json"
step grouped "$GROUPED_S" "$PY" bench/preset_steps.py grouped --device "$DEVICE" \
    "${GROUPED_ARGS[@]}" --json "$OUT/measure.json"

# --- (c') where a step's time goes: torch's profiler, eager and as a captured CUDA graph
step profile "$PROFILE_S" --log="$OUT/profile.txt" bash -c \
    'for graph in eager cuda-graph; do "$0" bench/profile_step.py --device "$1" \
         --step-graph "$graph" "${@:2}" || exit; done' "$PY" "$DEVICE" "${PROFILE_ARGS[@]}"

# --- (d) the denoisers: the torch ones on the device, then the CPU references
denoisers=nlm-torch,bm3d-torch,${REFERENCE_DENOISERS/bm3d/}
note=""
if [[ $REFERENCE_DENOISERS == *bm3d* ]]; then
    if imports bm3d; then
        denoisers+=,bm3d
    else
        note="bm3d package not importable: not timed"
    fi
elif imports bm3d; then
    note="bm3d package importable, not timed in the dry run"
fi
denoisers=$(echo "$denoisers" | sed -e 's/,,*/,/g' -e 's/,$//')
step denoisers "$DENOISERS_S" --note="$note" "$PY" bench/denoisers.py --device "$DEVICE" \
    --denoisers "$denoisers" "${DENOISERS_ARGS[@]}" --json "$OUT/denoisers.json"

# --- (e) reproduce denoise with the time that is left
mkdir -p "$WORK/reproduce"
if [ "$DRY" = 1 ]; then  # one image, whatever the data folder holds
    mkdir -p "$WORK/data/cbm3d9"
    for source in "$DATA" ../shared/data; do
        if [ -f "$source/cbm3d9/house.png" ]; then
            cp "$source/cbm3d9/house.png" "$WORK/data/cbm3d9/house.png" && break
        fi
    done
    [ -f "$WORK/data/cbm3d9/house.png" ] || timeout -k 2 30 "$PY" -c '
import sys
import imageio.v3 as iio
import numpy as np
y, x = np.mgrid[0:96, 0:96] / 96.0
image = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - x), x * y], -1) * 0.4 + 0.5
iio.imwrite(sys.argv[1], (image * 255).astype(np.uint8))' "$WORK/data/cbm3d9/house.png"
    DATA=$WORK/data
fi
left=$((TOTAL_S - (SECONDS - START) - FILES_S - DIGEST_S))
if [ ! -d "$DATA/cbm3d9" ]; then
    row reproduce skipped 0 "$left" - "no $DATA/cbm3d9 (carry .data)"
elif [ "$left" -lt "$MIN_REPRO_S" ]; then
    row reproduce skipped 0 "$left" - "only $left s left"
else
    seconds=$((left - REPRO_START_S < 6 ? 6 : left - REPRO_START_S))
    budget=$(printf '%d.%02d' $((seconds / 60)) $((seconds % 60 * 100 / 60)))
    step reproduce "$left" --ok=0,3 --log="$WORK/reproduce/reproduce.txt" \
        --note="--budget-minutes $budget (exit 3 = budget spent: ok)" \
        "$PY" -m deeprestore reproduce denoise --data "$DATA" --device "$DEVICE" \
        --budget-minutes "$budget" -o "$WORK/reproduce" "${REPRO_ARGS[@]}"
    tail -n 60 "$WORK/reproduce/reproduce.txt" >> "$LOG"
fi
# shellcheck disable=SC2016  # expanded by the inner bash
step reproduce-files "$FILES_S" bash -c 'set -o pipefail; cd "$1" && find reproduce -type f \
    \( -name "*.md" -o -name "*.csv" -o -name "*.json" -o -name "*.txt" \) | sort \
    | tar -czf "$2" -T -' _ "$WORK" "$OUT/reproduce.tar.gz"

rm -f "$OUT"/*.tmp
# one line per result on stdout: the device tool shows its tail even if no file comes back
timeout -k 2 "$DIGEST_S" "$PY" bench/preset_steps.py digest --out "$OUT" 2>&1 | tee -a "$LOG"
echo "done in $((SECONDS - START)) s: $(cd "$OUT" && printf '%s ' *)" | tee -a "$LOG"
cat "$OUT/steps.md"
