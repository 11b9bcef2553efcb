#!/usr/bin/env bash
# GPU check for the fused Triton LOT kernels, in one go (step limits add up to 7 min 50 s):
#   1. the CUDA tests (tests/lotformer/test_cuda.py) and the Triton kernel tests compiled for
#      the GPU (tests/lotformer/test_triton_lot.py; no interpreter when CUDA is present);
#   2. the GPU benchmark presets lra-text-retrieval, lra-listops and paper-latency (n = 4096,
#      16384): LOT on the Triton kernels and softmax (SDPA), then LOT on the PyTorch path
#      (kernel=torch) for the before / after comparison, forward and forward+backward.
# Logs and CSVs go to $OUT when set, else results/. Each step has its own time limit; a failed
# step is reported and the others still run; the exit code is that of the first failure.
# Usage: [PYTHON=.venv/bin/python] [OUT=dir] scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's lotformer
DEST="${OUT:-results}"
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
status=0

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log it, remember a failure
    local limit=$1 name=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc
}

if ! "$PY" -c "import torch, triton, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check.sh: needs a CUDA GPU and triton (pip install -e '.[test-triton]')" >&2
    exit 2
fi
"$PY" -c "import torch, triton; print(torch.__version__, 'triton', triton.__version__,
torch.cuda.get_device_name())" | tee "$LOG"
TAG=$("$PY" -c "import torch; import lra.bench.probes as b
print(b.device_tag(torch.cuda.get_device_name(), 'cuda'))") || TAG=cuda

step 150 tests "$PY" -m pytest -p no:xdist -p no:cacheprovider -rA \
    tests/lotformer/test_cuda.py tests/lotformer/test_triton_lot.py \
    --junitxml="$DEST/${TAG}_gpu_check_tests.xml"

bench() {  # bench SECONDS PRESET [extra args]: Triton LOT + SDPA, then LOT on the torch path
    local limit=$1 preset=$2
    shift 2
    step "$limit" "bench $preset triton" "$PY" scripts/bench_attention.py --preset "$preset" \
        --device cuda --backends lot,softmax --option lot.kernel=triton --repeats 10 \
        --timeout 40 --out "$DEST" --tag "$TAG-triton" "$@"
    step "$limit" "bench $preset torch" "$PY" scripts/bench_attention.py --preset "$preset" \
        --device cuda --backends lot --option lot.kernel=torch --repeats 10 \
        --timeout 40 --out "$DEST" --tag "$TAG-torchlot" "$@"
}
bench 50 lra-text-retrieval
bench 50 lra-listops
bench 60 paper-latency --lengths 4096,16384

for csv in "$DEST"/bench_*_"$TAG"-triton.csv; do
    [ -f "$csv" ] && "$PY" scripts/bench_attention.py --summary "$csv" --compare softmax \
        2>&1 | tee -a "$LOG"
done
echo "gpu_check.sh: done, exit $status; log $LOG" | tee -a "$LOG"
exit "$status"
