#!/usr/bin/env bash
# Issue #14's GPU runs, for a session lent a GPU (at most 10 min a command, 15 min in all), in
# two commands that each fit one call:
#   scripts/gpu_reproduce.sh step        # whole-step efficiency on the GPU (about 6 min)
#   scripts/gpu_reproduce.sh reproduce   # the default reproduce set, shortened (about 8 min)
# `step`: scripts/bench_step.py --device cuda over the six tasks x LOT and the backends with
#   published numbers, 20 s per cell, loader timing with 0 and 4 workers (pinned memory), then
#   its README tables; rows over the limit are `timeout`, never guessed.
# `reproduce`: the default set (ListOps and Pathfinder-32 x LOT and softmax, seed 0) with a
#   5-minute budget, 4 runs at once on the GPU; Pathfinder on 20000 generated images (the LRA
#   release has 200000; generating them takes longer than a call). Marked shortened everywhere.
# Outputs go to $OUT when set (the device tool brings back what is under it), else results/.
# Usage: [PYTHON=.venv/bin/python] [OUT=dir] scripts/gpu_reproduce.sh step|reproduce [--dry-run]
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEST="${OUT:-results}"
WHAT="${1:-}"
DRY="${2:-}"
BACKENDS=lot,softmax,linear,performer,nystrom,linformer,skyformer,bigbird,reformer

run() {  # print the command (shell-quoted); run it unless --dry-run
    printf '+'
    printf ' %q' "$@"
    echo
    [ "$DRY" = "--dry-run" ] || "$@"
}

case "$WHAT" in
step | reproduce) ;;
*)
    echo "usage: scripts/gpu_reproduce.sh step|reproduce [--dry-run]" >&2
    exit 2
    ;;
esac
if [ "$DRY" != "--dry-run" ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_reproduce.sh: needs a CUDA GPU (torch.cuda.is_available() is False here)" >&2
    exit 2
fi
mkdir -p "$DEST"
if [ "$WHAT" = step ]; then
    TAG=cuda
    [ "$DRY" = "--dry-run" ] || TAG=$("$PY" -c "import torch, lra.bench.probes as p
print(p.device_tag(torch.cuda.get_device_name(), 'cuda'))")
    run timeout 540 "$PY" scripts/bench_step.py --device cuda --backends "$BACKENDS" --timeout 20 \
        --loader-workers 0,4 --out "$DEST" --tag "$TAG"
    run "$PY" scripts/bench_step.py --summary "$DEST/step_$TAG.csv" --readme README.md
else
    run timeout 570 "$PY" scripts/reproduce.py --set default --seeds 0 --jobs 4 --budget-minutes 5 \
        --out "$DEST" trainer.accelerator=gpu "pathfinder:task.data.generate={n: 20000, seed: 0, workers: 16}"
fi
