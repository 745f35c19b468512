#!/usr/bin/env bash
# The exhaustive grid behind benchmarks/diagnosis.py's agreement, for the built-in cases that
# benchmarks/results/runs.csv (the reproduction benchmark, 6 shifts) does not have: every other
# corruption at 25 per class (seeds 0-2), then every shift at 100 per class (seed 0 for the
# shifts runs.csv lacks there, then seeds 1 and 2). Only what the agreement needs: no
# fine-tuning, all, head and each block, at the reproduction's learning rates and protocol
# (15 epochs, Adam, weight decay 1e-4, BN eval, (lr, epoch) chosen on validation).
#
#   WORKERS=16 LIMIT=540 bash benchmarks/diagnosis_grid.sh      # ~12,000 CPU seconds in all
#
# Environment: OUT (default benchmarks/results/diagnosis_grid), WORKERS (2), LIMIT (seconds
# for the whole script, 0 = none; runs.csv keeps every finished run and a rerun resumes),
# EPOCHS (15), DATA_DIR (.cache/bench-data), PY (.venv/bin/python, else python3).
# benchmarks/diagnosis.py counts a case only once all its runs are in.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/diagnosis_grid}
WORKERS=${WORKERS:-2}
LIMIT=${LIMIT:-0}
EPOCHS=${EPOCHS:-15}
DATA_DIR=${DATA_DIR:-.cache/bench-data}
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1

# In runs.csv already: impulse_noise, glass_blur, zigzag and the three synthetic shifts at 25
# per class; impulse_noise and the synthetic shifts at 100 per class, seed 0.
REST=shot_noise,motion_blur,shear,scale,rotate,brightness,translate,stripe,fog,spatter,dotted_line,canny_edges,gaussian_noise,contrast,inverse
ALL=impulse_noise,glass_blur,zigzag,$REST,subpopulation,label_flip,spurious
deadline=$((SECONDS + LIMIT))

phase() {  # phase REGIME SHIFTS SEEDS
    local left=$((deadline - SECONDS))
    if [ "$LIMIT" -gt 0 ] && [ "$left" -le 5 ]; then
        echo "== n=$1 seeds $3: skipped, the time limit is spent"
        return 0
    fi
    echo "== n=$1 seeds $3 ($(date -u +%T))"
    local run=("$PY" benchmarks/reproduce.py --out "$OUT" --data-dir "$DATA_DIR"
               --regimes "$1" --shifts "$2" --shifts-for "$1=$2" --seeds "$3" --seeds-for "$1=$3"
               --methods none,all,head,block1,block2,block3 --lrs 1e-3,1e-4
               --lrs-for head=1e-1,1e-2,1e-3 --epochs "$EPOCHS" --workers "$WORKERS")
    if [ "$LIMIT" -gt 0 ]; then
        timeout -s TERM -k 20 "$left" "${run[@]}"
    else
        "${run[@]}"
    fi
}

mkdir -p "$OUT"
phase 25 "$REST" 0,1,2
phase 100 "$REST,glass_blur,zigzag" 0
phase 100 "$ALL" 1,2
echo "== done ($(date -u +%T)): $(($(wc -l <"$OUT/runs.csv") - 1)) runs in $OUT/runs.csv"
