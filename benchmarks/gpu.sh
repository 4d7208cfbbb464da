#!/usr/bin/env bash
# Every benchmark at Stable Diffusion 2.1-base shapes (random weights, nothing downloaded) on
# one GPU, each writing its JSON to OUT. Sized to finish in under 10 minutes on an H100-class
# GPU, the one-time save of the random SD 2.1 folder included. Run it twice (--out run1, run2)
# for docs/performance.md.
#
#   bash benchmarks/gpu.sh [--out DIR] [--python PY]   # on a GPU machine
#   bash benchmarks/gpu.sh --smoke --out DIR           # the same scripts, tiny model, CPU, one process
#
# --smoke is what the test suite runs (tests/test_benchmarks.py): every script and flag used
# here must keep working on the CPU with the tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=benchmarks/results/gpu
PY=${PYTHON:-python}
SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUT=$2; shift ;;
        --python) PY=$2; shift ;;
        *) echo "usage: bash benchmarks/gpu.sh [--smoke] [--out DIR] [--python PY]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT"

if [ "$SMOKE" = 1 ]; then
    COMMON=(--model tiny --device cpu --repeats 1)
    ADAPTER=(--steps 3 --batch 2 --classes 2 --shots 2 --no-memory)
    GENERATION=(--classes 2 --images-per-class 4 --steps 2 --batch 2)
    SWAP=(--classes 2 --images-per-class 2 --steps 2 --batch 2)
    SHORTCUTS=(--classes 2 --images-per-class 3 --steps 4 --batch 2)
    INVERSION=(--steps 3 --classes 2 --shots 2 --images-per-class 2 --sample-steps 2 --sample-batch 2 --no-memory)
    CLASSIFIER=(--model tiny --device cpu --repeats 1 --classes 2 --shots 4 --test 2 --batch 4 --epochs 1 --no-cache-row)
    COMPILE=()  # inductor on the CPU compiles for minutes at real shapes; the smoke run skips it
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'benchmarks/gpu.sh: no CUDA device (use --smoke on a CPU)')"
    COMMON=(--model sd21-shapes --device cuda --repeats 2)
    ADAPTER=(--steps 20 --batch 4 --resolution 512)
    GENERATION=(--classes 2 --images-per-class 16 --steps 25 --batch 8 --resolution 512)
    SWAP=(--classes 4 --images-per-class 8 --steps 25 --batch 8 --resolution 512)
    # The paper's 50 steps against 20 of DPM-Solver++, the step cache and token merging.
    SHORTCUTS=(--classes 2 --images-per-class 8 --steps 50 --dpm-steps 20 --batch 8 --resolution 512)
    INVERSION=(--steps 10 --batch 4 --resolution 512 --classes 2 --shots 4 --images-per-class 8 --sample-steps 25 --sample-batch 8)
    # The classifier's own shapes: ViT-B/16 (the paper's), random weights, 16 shots x 10 classes, 5 epochs.
    CLASSIFIER=(--model vitb32-shapes --device cuda --repeats 2 --classes 10 --shots 16 --test 8 --batch 32 --epochs 5 --workers 4)
    COMPILE=(--set generator.compile=on)
fi

# --smoke queues the commands and runs them in one Python process (benchmarks/run_scripts.py):
# every script and flag is the same, without paying torch's imports six times.
QUEUE=()
run() {
    local name=$1; shift
    if [ "$SMOKE" = 1 ]; then
        QUEUE+=("$(printf '%q ' "$@")--out $(printf '%q' "$OUT/$name.json")")
        return
    fi
    echo "== $name: $*"
    local start=$SECONDS
    "$PY" "$@" --out "$OUT/$name.json"
    echo "   $name: $((SECONDS - start)) s"
}

run adapter_training benchmarks/adapter_training.py "${COMMON[@]}" "${ADAPTER[@]}"
# The default levers of the device (on a GPU: channels-last, fused QKV without a LoRA), and the
# writer threads on/off.
run generation benchmarks/generation.py "${COMMON[@]}" "${GENERATION[@]}"
if [ ${#COMPILE[@]} -gt 0 ]; then
    run generation-compile benchmarks/generation.py "${COMMON[@]}" "${GENERATION[@]}" "${COMPILE[@]}" --no-writers-table
fi
run cls_adapter_swap benchmarks/cls_adapter_swap.py "${COMMON[@]}" "${SWAP[@]}"
run shortcuts benchmarks/shortcuts.py "${COMMON[@]}" "${SHORTCUTS[@]}"
run inversion benchmarks/inversion.py "${COMMON[@]}" "${INVERSION[@]}"
run classifier benchmarks/classifier.py "${CLASSIFIER[@]}"
if [ "$SMOKE" = 1 ]; then
    printf '%s\n' "${QUEUE[@]}" | "$PY" benchmarks/run_scripts.py
fi
echo "results in $OUT"
