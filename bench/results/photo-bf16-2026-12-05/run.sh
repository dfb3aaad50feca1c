#!/bin/bash
. VENV/bin/activate
cd /work/main
for spec in "kodim03 2" "kodim03 3" "kodim03 4" "peppers 1" "peppers 2"; do
  set -- $spec
  for p in float32 bf16; do
    echo "== $1 seed $2 $p $(date -u +%H:%M)"
    PYTHONPATH=. python bench/photo.py --image $1 --seed $2 --work /work/runs/photoq/$1-$2-$p -- --precision $p
  done
done
echo DONE
