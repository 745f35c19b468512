#!/usr/bin/env bash
# The GPU check: what only a CUDA device exercises, in one short run (about 5 minutes on an
# H200 for the first three steps, up to 4 more for the fourth), since CI has no GPU.
#
#   1. tests: the engine and a whole worker job on CUDA (tests/selector/test_cuda.py,
#      tests/workers/test_cuda_jobs.py; they skip everywhere else);
#   2. demo: `surgical run --exit-after-demo` with one worker, which takes the GPU by default;
#   3. throughput: benchmarks/throughput.py's full grid on the device;
#   4. sharing: the paper-grid job with 1, 2 and 4 workers on the one GPU (worker_scaling.py),
#      the README's advice for trials of the paper's size, which leave a GPU mostly idle.
#
# `bash benchmarks/gpu_check.sh [STEP ...]` runs the steps named (default: all four).
# Each step writes its log under $OUT (default ./gpu-check-out) and a failing step does not stop
# the next; the exit status is 1 if any failed. The machine needs this project's dependencies
# importable (torch from its image is fine: pyproject admits torch >= 2.3) and the built-in
# source model cached in .cache/test-data (any `make test` builds it), which the demo copies.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
steps=" ${*:-tests demo throughput sharing} "

step() {
    local name=$1 started=$SECONDS rc
    shift
    [[ $steps == *" $name "* ]] || return 0
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - started)) s; the log's end:"
    tail -n 30 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "bf16" if torch.cuda.is_bf16_supported() else "no bf16")'
} 2>&1 | tee "$OUT/machine.txt"

step tests timeout 240 python3 -m pytest -q -p no:cacheprovider \
    tests/selector/test_cuda.py tests/workers/test_cuda_jobs.py
rm -rf /tmp/gpu-check-data && cp -r .cache/test-data /tmp/gpu-check-data  # the cached model
step demo env SURGICAL_DATA_DIR=/tmp/gpu-check-data timeout 180 python3 -m workers.cli run \
    --exit-after-demo --workers 1 --port 8765 --dashboard-port 8766
step throughput timeout 170 python3 benchmarks/throughput.py --device cuda \
    --out "$OUT/throughput-gpu.md"
step sharing timeout 240 python3 benchmarks/worker_scaling.py --device cuda --workers 1 2 4 \
    --spec benchmarks/specs/paper-grid-scaling.json --models-from .cache/test-data \
    --out "$OUT/worker_sharing_gpu.md"
exit $status
