#!/usr/bin/env bash
# The GPU route, run for real: one command on any CUDA machine (issue 10).
#
#   bash tools/gpu_check.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds Fashion-MNIST's four .gz files (or a fashion-mnist/ folder
# with them). Run from the repository root. Steps, each under a time limit,
# each logged with its exit status; a failed step does not stop the next:
#   install     pip install --no-deps --no-build-isolation -e .  (no network)
#   versions    GPU, driver, CUDA, NVRTC, CuPy, Numba, torch, nvcc, compute-sanitizer
#   gpu-tests   every test marked gpu (pytest -m gpu)
#   train       LeNet-5, 2 epochs, --device gpu, full Fashion-MNIST; a second
#               run stopped by SIGTERM mid-epoch 2 and resumed must end bit-identical
#   dropout     the same stop/resume check on a tiny YOLO (dropout: CuPy's RNG state)
#   conv-bench  benchmarks/gpu_conv.py: raw CUDA kernels vs im2col+cuBLAS vs cuDNN
#   deform-bench benchmarks/gpu_deform.py: deformable conv, CUDA kernels vs CuPy reference vs torchvision
#   lenet-bench benchmarks/gpu_lenet.py: a LeNet-5 epoch, scratchnet vs PyTorch
#   memcheck, racecheck   compute-sanitizer on the CUDA kernel tests (if it can attach)
# OUT_DIR receives gpu_check.json (every step, versions, numbers), gpu_check.log
# (everything printed), gpu_conv.json, gpu_deform.json and gpu_lenet.json: 5 files. Exit 0 only
# if every step passed. The whole run keeps within SCRATCHNET_GPU_CHECK_BUDGET
# seconds (default 450: under 8 minutes), later steps getting what is left.
#
# Smoke mode: SCRATCHNET_GPU_CHECK_DEVICE=cpu runs the same steps on the CPU
# at tiny sizes (tests/kernels/test_gpu_check.py), so the plumbing is proven without a GPU.
if [ $# -ne 2 ]; then
    echo "usage: bash tools/gpu_check.sh DATA_DIR OUT_DIR   (from the repository root)" >&2
    exit 2
fi
DATA_DIR=$1
OUT_DIR=$2
DEVICE=${SCRATCHNET_GPU_CHECK_DEVICE:-gpu}
SLACK=1  # smoke mode: a shared CPU machine gets 4x the time limits (its tiny steps take seconds when quiet)
[ "$DEVICE" = gpu ] || SLACK=4
BUDGET=${SCRATCHNET_GPU_CHECK_BUDGET:-$((450 * SLACK))}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
DATA_DIR=$(cd "$DATA_DIR" 2>/dev/null && pwd || echo "$DATA_DIR")  # absolute, before moving to the repo root
cd "$(dirname "$0")/.." || exit 2
# the tests' data root (tests/conftest.py): DATA_DIR itself when it holds fashion-mnist/, else its parent
if [ -d "$DATA_DIR/fashion-mnist" ]; then SCRATCHNET_DATA=$(cd "$DATA_DIR" && pwd)
else SCRATCHNET_DATA=$(cd "$DATA_DIR/.." 2>/dev/null && pwd); fi
export SCRATCHNET_DATA
WORK=$(mktemp -d)  # run folders and partial JSON: never in OUT_DIR (only a few files come back from a device)
STARTED=$SECONDS

if [ "$DEVICE" = gpu ]; then
    EPOCH_STEPS=938; LIMIT=(); BENCH=(); TESTS=(tests); XDIST=()
    $PY -c "import xdist" 2>/dev/null && XDIST=(-n 4)  # pytest-xdist: 4 processes share the GPU
else  # smoke: tiny sizes, and only the quick test file's gpu tests (all skip on the CPU)
    EPOCH_STEPS=4; LIMIT=(--limit 256 --test-limit 128); BENCH=(--smoke); TESTS=(tests/kernels/test_gpu_readiness.py); XDIST=()
fi

# step NAME LIMIT_SECONDS COMMAND...: run it under a time limit (capped by what is left of
# the budget), log its exit status and time; never stop the script.
step() {
    local name=$1 limit=$(($2 * SLACK)) left
    shift 2
    left=$((BUDGET - (SECONDS - STARTED)))
    [ "$left" -lt "$limit" ] && limit=$left
    echo
    echo "===== [$name] $(date -u +%H:%M:%S) limit ${limit}s: $*"
    if [ "$limit" -lt 5 ]; then
        echo "===== [$name] not run: the ${BUDGET}s budget is spent"
        echo "$name|124|0|not run: out of time" >>"$WORK/steps.txt"
        return
    fi
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    [ $rc -eq 124 ] && echo "===== [$name] TIMED OUT after ${limit}s"
    echo "===== [$name] exit $rc after $((SECONDS - start))s"
    echo "$name|$rc|$((SECONDS - start))|" >>"$WORK/steps.txt"
}
skip() {  # skip NAME REASON
    echo
    echo "===== [$1] skipped: $2"
    echo "$1|0|0|skipped: $2" >>"$WORK/steps.txt"
}

main() {
echo "gpu_check: device $DEVICE, data $DATA_DIR (tests: SCRATCHNET_DATA=$SCRATCHNET_DATA), out $OUT_DIR," \
     "budget ${BUDGET}s, $($PY --version 2>&1)"

# ---- install (no network: no dependencies, no build isolation)
if [ "$DEVICE" = gpu ]; then
    step install 90 $PY -m pip install --no-deps --no-build-isolation -e .
    if ! $PY -c "import scratchnet.kernels" 2>/dev/null; then
        # what a wheel would hold, copied: scratchnet/ with kernels/ inside it
        echo "install failed: using a copy of the package on PYTHONPATH instead"
        mkdir -p "$WORK/pkg" && cp -r scratchnet "$WORK/pkg/" && cp -r kernels "$WORK/pkg/scratchnet/kernels"
        export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
    fi
else
    skip install "smoke mode uses the installed checkout"
fi

# ---- versions (fails, with the one-sentence reason, if scratchnet cannot use the GPU)
step versions 60 $PY tools/gpu_check.py versions "$DEVICE" "$WORK/versions.json"

# ---- every GPU-marked test
step gpu-tests 150 $PY -m pytest -q -m gpu -p no:cacheprovider "${XDIST[@]}" "${TESTS[@]}"

# ---- LeNet-5: 2 epochs; again, stopped by SIGTERM mid-epoch 2, then resumed: bit-identical to the first
step train 200 $PY tools/gpu_check.py resume "$WORK" lenet "$((EPOCH_STEPS * 3 / 2))" "$WORK/train_resume.json" \
    lenet --device "$DEVICE" --data-dir "$DATA_DIR" --no-download --epochs 2 --seed 0 --no-progress "${LIMIT[@]}"

# ---- dropout: the same check on a tiny YOLO (dropout in its head), so CuPy's RNG state must be resumed
if [ "$DEVICE" = gpu ]; then
    step dropout 60 $PY tools/gpu_check.py resume "$WORK" yolo 2 "$WORK/dropout_resume.json" \
        fast_yolov1 --device "$DEVICE" --limit 24 --test-limit 8 --batch-size 8 --no-progress --lr 1e-3 \
        --model-arg image_size=64 --model-arg width_mult=0.0625 --model-arg "hidden_features=(32, 32)" \
        --epochs 2 --seed 3
else
    skip dropout "smoke mode: tests/train/test_train.py resumes this tiny YOLO on the CPU"
fi

# ---- benchmarks (each framework timed in its own process; they write their JSON to OUT_DIR too)
step conv-bench 90 $PY benchmarks/gpu_conv.py --device "$DEVICE" "${BENCH[@]}" --json "$WORK/gpu_conv.json"
step deform-bench 60 $PY benchmarks/gpu_deform.py --device "$DEVICE" "${BENCH[@]}" --json "$WORK/gpu_deform.json"
step lenet-bench 90 $PY benchmarks/gpu_lenet.py --device "$DEVICE" --data-dir "$DATA_DIR" "${BENCH[@]}" \
    --json "$WORK/gpu_lenet.json"
for f in gpu_conv gpu_deform gpu_lenet; do [ -f "$WORK/$f.json" ] && cp "$WORK/$f.json" "$OUT_DIR/"; done

# ---- compute-sanitizer on the CUDA kernel tests: memcheck (bad accesses) and racecheck (shared-memory
# races; the emulator cannot see races, README "Kernels"). Only where it can attach to this GPU.
SANITIZE=($PY -m pytest -q -x -p no:cacheprovider tests/kernels/test_kernels.py -m gpu -k "cuda and float32")
if ! command -v compute-sanitizer >/dev/null; then
    skip memcheck "compute-sanitizer is not installed"
    skip racecheck "compute-sanitizer is not installed"
elif ! timeout 60 compute-sanitizer --error-exitcode 1 $PY -c "import cupy; cupy.arange(4).sum().item()"; then
    skip memcheck "compute-sanitizer cannot attach to this GPU (e.g. under gVisor)"
    skip racecheck "compute-sanitizer cannot attach to this GPU (e.g. under gVisor)"
else
    step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 "${SANITIZE[@]}"
    step racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 1 "${SANITIZE[@]}"
fi

# ---- one JSON with everything; exit 1 if any step failed
echo
echo "gpu_check finished in $((SECONDS - STARTED))s"
$PY tools/gpu_check.py summary "$WORK" "$OUT_DIR/gpu_check.json"
}

main 2>&1 | tee "$OUT_DIR/gpu_check.log"
status=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$status"
