#!/usr/bin/env bash
# Everything the open GPU items need, in one device call of under 10 minutes.
#
#   bash bench/gpu_check.sh            (from the repository root, on the GPU machine)
#
# Writes into $OUT (the device tool's folder; bench/results/gpu-check otherwise), 8 files:
# info.txt (GPU, driver, torch), steps.txt (each step's exit status and seconds),
# preset-dip.json / preset-deepred.json (the full `denoise` preset on scikit-image's
# 512×512 astronaut with σ = 25 noise: wall time, PSNR), gpu-speed.json (bench/speed.py at 512
# and 256 in float32, tf32 and bf16 at 512 under "precision", --compile under "compile"),
# gpu-grouped.json (bench/grouped.py: 1, 4 and 16 problems per step at 256 and 512, one after the
# other vs as one grouped network: s/it, throughput, peak memory; issue 21),
# gpu-denoisers.json (bench/denoisers.py), reproduce.txt (`reproduce denoise` at full protocol
# with its plan under a 1-minute budget and --group auto, timed; only where $DATA holds
# cbm3d9/: carry it, e.g. a copy of ../shared/data in .data), and log.txt (everything printed).
# Each step has its own time limit, so one that hangs does not cost the others; the limits add
# up to 570 s.
#
# A smoke test of the script itself on a CPU (minutes, no GPU figures):
#   DEVICE=cpu SIZES=64 CROP=64 PRESET_ITERS=3 ITERS=3 OUT=/tmp/gpu-check bash bench/gpu_check.sh
#
# The GPU machine has torch, scikit-image, imageio, typer, rich, pytest but not the `bm3d`
# package (nor bm4d, PyWavelets). Where ./.whl holds their wheels (see docs/performance.md,
# "GPU"), they are installed to /tmp/site first; carry `.whl` in the device call.
set -u
OUT=${OUT:-bench/results/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
if ! python3 -c "import bm3d" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=python3
DR="$PY -m deeprestore"
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-512,256}
CROP=${CROP:-512}
ITERS=${ITERS:-30}
PRESET_ITERS=${PRESET_ITERS:+--iters $PRESET_ITERS}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record status and seconds
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    timeout "$limit" "$@"
    local status=$?
    echo "$name exit=$status seconds=$((SECONDS - start))" | tee -a "$OUT/steps.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.is_available() and torch.cuda.get_device_name())"
    $PY -c "import bm3d, importlib.metadata as m; print('bm3d', m.version('bm3d'))" 2>&1 | tail -1
    nproc
} > "$OUT/info.txt" 2>&1

step tests 35 $PY -m pytest -q -rs tests/test_nlm_torch.py tests/test_bm3d_torch.py -k cuda \
    -p no:cacheprovider

work=$(mktemp -d)
$PY - "$work" "$CROP" <<'EOF'
import sys
from pathlib import Path

import imageio.v3 as iio
from skimage import data

crop = int(sys.argv[2])
iio.imwrite(Path(sys.argv[1]) / "astronaut.png", data.astronaut()[:crop, :crop])
EOF
step degrade 10 $DR degrade "$work/astronaut.png" --task denoise --sigma 25 -o "$work/in" -q
for method in dip deepred; do
    step "preset-$method" 100 $DR denoise "$work/in/astronaut.png" --method "$method" \
        --preset denoise $PRESET_ITERS --device "$DEVICE" --reference "$work/astronaut.png" -o "$work/$method" \
        -q --json
    cp "$work/$method"/*.json "$OUT/preset-$method.json" 2>/dev/null
done

# 512 first: a step cut short by its limit keeps the blocks it finished (written as it goes)
step speed 80 $PY bench/speed.py --device "$DEVICE" --sizes "$SIZES" --iters "$ITERS" --no-pieces \
    --methods dip,dip-tv,deepred-nlm-torch,deepred-bm3d-torch,deepred-nlm-async,dip-runs2 \
    --json "$OUT/gpu-speed.json"
step precision 45 $PY bench/speed.py --device "$DEVICE" --sizes "${SIZES%%,*}" --iters "$ITERS" \
    --no-pieces --methods dip,deepred-nlm-torch --precisions tf32,bf16 --json "$work/precision.json"
step compile 35 $PY bench/speed.py --device "$DEVICE" --sizes "${SIZES%%,*}" --iters "$ITERS" \
    --no-pieces --methods dip,dip-compile --json "$work/compile.json"
$PY - "$OUT/gpu-speed.json" "$work/precision.json" "$work/compile.json" <<'EOF'
import json
import sys
from pathlib import Path

main, *extras = (Path(p) for p in sys.argv[1:])
merged = json.loads(main.read_text()) if main.exists() else {}
for key, extra in zip(("precision", "compile"), extras, strict=True):
    if extra.exists():
        merged[key] = json.loads(extra.read_text())
main.write_text(json.dumps(merged, indent=2))
EOF
step grouped 60 $PY bench/grouped.py --device "$DEVICE" --sizes "${SIZES#*,},${SIZES%%,*}" \
    --problems "${PROBLEMS:-1,4,16}" --iters "${GROUP_ITERS:-10}" --repeats 2 \
    --json "$OUT/gpu-grouped.json"
step denoisers 25 $PY bench/denoisers.py --device "$DEVICE" --sizes "$CROP" --repeats 2 \
    --json "$OUT/gpu-denoisers.json"
DATA=${DATA:-.data}
if [ -d "$DATA/cbm3d9" ]; then
    step reproduce 80 bash -c "$DR reproduce denoise --data $DATA --device $DEVICE --group auto \
        --budget-minutes ${BUDGET:-1} -o $work/reproduce 2>&1 | tee $OUT/reproduce.txt"
else
    echo "reproduce: skipped ($DATA/cbm3d9 not found)" | tee -a "$OUT/steps.txt"
fi
echo "done: $(ls "$OUT")"
