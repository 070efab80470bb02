#!/usr/bin/env bash
# gpu-check: everything CUDA, in one go, on a fresh GPU machine with no registry
# (`make gpu-check`; issue 3 item 7). Steps, each with its own timeout and log,
# going on past failures:
#   1 build    GPUACCEL_CUDA_ARCH=90 pip install --no-build-isolation -e .
#   2 info     python -m gpuaccel.info
#   3 tests    pytest tests -k cuda
#   4 gemm     hand-written SGEMM (fp32, tf32) vs cuBLAS (benchmarks/bench_gemm_cuda.py)
#   5 features the reference CNN's images/s at batch 128, 512, 2048 with each issue-14
#              feature on and off, PyTorch eager beside it where torch has CUDA, and the
#              small ResNet's time to 93% test accuracy (benchmarks/gpu_features.py)
#   6 bench    python -m gpuaccel.bench --device cpu,cuda --epochs 2
#   7 conv     im2col vs implicit GEMM per conv layer (benchmarks/conv_kernels.py --device cuda)
#   8 colour   the tutorial CNN on a folder of RGB PNGs at 64x64, augmentation on and off
#              (benchmarks/colour_training.py; needs Pillow)
#   9 memcheck a short training under compute-sanitizer (memcheck), if found
#  10 racecheck the GEMM/conv/pool/augmentation kernels under compute-sanitizer racecheck
# Logs go to ${OUT:-gpu-check-out}; a summary table is printed last. The whole run
# stays under GPU_CHECK_BUDGET seconds (default 450): a step never gets more than
# what is left (measurements before the sanitizers). Dataset: carry the Fashion-MNIST files in .data/ (ignored by git).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PY:-python3}
BUDGET=${GPU_CHECK_BUDGET:-470}
export GPUACCEL_CUDA_ARCH=${GPUACCEL_CUDA_ARCH:-90}
export PYTHONUNBUFFERED=1
[ -d "$ROOT/.data" ] && export GPUACCEL_DATA="$ROOT/.data"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
START=$SECONDS
declare -a NAMES STATUS TIMES

# step NAME TIMEOUT CMD...: run with a timeout capped by the remaining budget.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START) - 10))
    [ "$limit" -gt "$left" ] && limit=$left
    local log="$OUT/$name.log" t0=$SECONDS rc
    if [ "$limit" -lt 5 ]; then
        NAMES+=("$name"); STATUS+=("SKIPPED (budget)"); TIMES+=(0)
        return
    fi
    echo "=== $name (timeout ${limit}s): $*" | tee "$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local st="ok"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then st="TIMEOUT (${limit}s)"; elif [ $rc -ne 0 ]; then st="FAIL (rc $rc)"; fi
    NAMES+=("$name"); STATUS+=("$st"); TIMES+=($((SECONDS - t0)))
    echo "--- $name: $st in $((SECONDS - t0))s"
    [ "$st" != "ok" ] && tail -n 25 "$log" | sed 's/^/    | /'
}

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi 2>&1 | head -20
    command -v nvcc && nvcc --version | tail -2
    echo "compute-sanitizer: ${SAN:-not found}"
    echo "python: $($PY --version 2>&1)"
    $PY -c "import numpy, setuptools; print('numpy', numpy.__version__, 'setuptools', setuptools.__version__)" 2>&1
    echo "GPUACCEL_DATA=${GPUACCEL_DATA:-unset}  GPUACCEL_CUDA_ARCH=$GPUACCEL_CUDA_ARCH"
} >"$OUT/machine.log" 2>&1

# No registry there: setuptools/wheel from a carried .whl/ folder if missing.
if ! $PY -c "import setuptools, wheel" 2>/dev/null && [ -d .whl ]; then
    $PY -m pip install -q --no-index --find-links .whl setuptools wheel >>"$OUT/machine.log" 2>&1
fi

step build 240 env GPUACCEL_FORCE_CUDA=1 $PY -m pip install --no-build-isolation --no-index --no-deps -v -e .
if ! $PY -c "import gpuaccel._cuda" 2>/dev/null; then
    # pip could not do it (old pip/setuptools?): build in place instead
    step build-inplace 200 env GPUACCEL_FORCE_CUDA=1 $PY setup.py build_ext --inplace
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
grep -h "gpuaccel: nvcc" "$OUT"/build*.log 2>/dev/null | tail -9 >"$OUT/nvcc-times.log"

step info 30 $PY -m gpuaccel.info
step tests 120 $PY -m pytest -q -rs tests -k cuda --junitxml="$OUT/tests-junit.xml" \
    --ignore=tests/test_cuda_emu.py --ignore=tests/test_cuda_emu_reports.py  # emulator-only, no GPU code

step gemm 70 $PY benchmarks/bench_gemm_cuda.py --json "$OUT/gemm_cuda.json"
step features 130 $PY benchmarks/gpu_features.py --device cuda --batches 128,512,2048 --seconds 1.5 --torch \
    --resnet-target 0.93 --json "$OUT/features.json"
step bench 90 $PY -m gpuaccel.bench --device cpu,cuda --epochs 2 --out "$OUT/bench"
step conv 45 $PY benchmarks/conv_kernels.py --device cuda --batch-size 128,512
step colour 40 $PY benchmarks/colour_training.py --device cuda --images 3000 --repeat 1

# A short training (4 steps) and single ops, small enough for the sanitizer.
cat >"$OUT/sanitize_train.py" <<'EOF'
import numpy as np
import gpuaccel as ga
from gpuaccel.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
try:
    (x, y), _ = ga.datasets.fashion_mnist.load_data()
    x = (x[:512].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28); y = y[:512].astype(np.int32)
except Exception as e:
    print("dataset unavailable, random data:", e)
    rng = np.random.default_rng(0)
    x = rng.random((512, 1, 28, 28), dtype=np.float32); y = rng.integers(0, 10, 512).astype(np.int32)
m = ga.Sequential([Conv2D(32, 3, padding="same", activation="relu"), MaxPool2D(2),
                   Conv2D(64, 3, padding="same", activation="relu"), MaxPool2D(2),
                   Flatten(), Dense(128, activation="relu"), Dropout(0.25), Dense(10)], input_shape=(1, 28, 28))
m.compile(optimizer=ga.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cuda")
h = m.fit(x, y, epochs=1, batch_size=128, verbose=0, seed=0)
print("loss", h.history["loss"], "accuracy", h.history.get("accuracy"))
print("predict", m.predict(x[:16]).shape)
EOF
cat >"$OUT/sanitize_ops.py" <<'EOF'
import numpy as np
import gpuaccel as ga
rng = np.random.default_rng(0)
for (m, n, k) in [(33, 47, 19), (130, 129, 70), (64, 300, 2000)]:
    for ta in (False, True):
        for tb in (False, True):
            a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
            b = rng.random((n, k) if tb else (k, n), dtype=np.float32)
            for kern in ("auto", "ref", "cublas"):
                ga.ops.matmul(a, b, trans_a=ta, trans_b=tb, device="cuda", kernel=kern)
x = rng.random((3, 5, 11, 9), dtype=np.float32); w = rng.random((7, 5, 3, 3), dtype=np.float32)
for kern in ("im2col", "implicit"):
    y = ga.ops.conv2d(x, w, stride=2, padding=1, device="cuda", kernel=kern)
    ga.ops.conv2d_backward(x, w, np.ones_like(y), stride=2, padding=1, device="cuda", kernel=kern)
    yp, _ = ga.ops.conv2d_max_pool2d(x, w, stride=1, padding=1, activation="relu", pool_size=3, pool_stride=2,
                                     device="cuda", kernel=kern)
    ga.ops.conv2d_max_pool2d_backward(x, w, None, np.ones_like(yp), stride=1, padding=1, activation="relu",
                                      pool_size=3, pool_stride=2, device="cuda", kernel=kern)
xb = rng.random((9, 4, 16, 16), dtype=np.float32); wb = rng.random((8, 4, 3, 3), dtype=np.float32)
ga.ops.conv2d_backward(xb, wb, np.ones((9, 8, 16, 16), np.float32), padding=1, device="cuda", kernel="implicit")  # split dw
p = ga.ops.max_pool2d(x, size=3, stride=2, device="cuda")  # overlapping windows
ga.ops.max_pool2d_backward(x, np.ones_like(p), size=3, stride=2, device="cuda")
logits = rng.standard_normal((70, 10), dtype=np.float32); labels = rng.integers(0, 10, 70).astype(np.int32)
ga.ops.softmax_cross_entropy(logits, labels, device="cuda")
ga.ops.dropout(x, 0.3, seed=1, device="cuda")
for fill in ("reflect", "wrap", "constant", "nearest"):  # the augmentation kernel, every fill mode
    ga.ops.random_affine(x, flip="horizontal_and_vertical", height_translation=0.2, width_translation=0.3,
                         height_zoom=0.2, rotation=0.1, fill_mode=fill, seed=2, device="cuda")
ga.ops.rescale(x, 1 / 255, 0.5, device="cuda")
print("ok")
EOF
if [ -n "$SAN" ]; then
    step memcheck 150 "$SAN" --tool memcheck --error-exitcode 1 --print-limit 20 $PY "$OUT/sanitize_train.py"
    step racecheck 90 "$SAN" --tool racecheck --error-exitcode 1 --print-limit 20 $PY "$OUT/sanitize_ops.py"
else
    NAMES+=("memcheck" "racecheck"); STATUS+=("SKIPPED (no compute-sanitizer)" "SKIPPED (no compute-sanitizer)"); TIMES+=(0 0)
fi

# The CUDA emulator's self-test kernels (tests/emu/emu_selftest.cu) on the GPU: the launch-
# limit error codes and the barrier, warp, atomic results that tests/test_cuda_emu.py
# expects of the emulator, logged here to compare with the hardware's.
step emu-selftest 60 bash -c 'nvcc -std=c++17 -Icsrc -gencode arch=compute_$1,code=sm_$1 \
    tests/emu/emu_selftest.cu -lcublas -o "$0/emu_selftest" && for s in "barrier reverse" "barrier shift" warp race \
    float_order limits device graphs; do echo "== $s"; "$0/emu_selftest" $s; done' "$OUT" "${GPUACCEL_CUDA_ARCH:-90}"

echo
echo "================ nvcc ================"
cat "$OUT/nvcc-times.log" 2>/dev/null
echo "================ tests ================"
grep -E "passed|failed|error" "$OUT/tests.log" 2>/dev/null | tail -3
echo "================ bench (tail) ================"
tail -n 18 "$OUT/bench.log" 2>/dev/null
echo "================ features ================"
grep -vE "^=== " "$OUT/features.log" 2>/dev/null | head -30
echo "================ gemm (tail) ================"
sed -n '/^SGEMM on/,$p' "$OUT/gemm.log" 2>/dev/null | head -24
echo "================ conv (im2col vs implicit) ================"
tail -n 12 "$OUT/conv.log" 2>/dev/null
echo
echo "================ gpu-check summary ($((SECONDS - START))s, logs in $OUT) ================"
printf "%-14s %-34s %6s\n" step status seconds
fail=0
for i in "${!NAMES[@]}"; do
    printf "%-14s %-34s %6s\n" "${NAMES[$i]}" "${STATUS[$i]}" "${TIMES[$i]}"
    case "${STATUS[$i]}" in ok|SKIPPED*) ;; *) fail=1 ;; esac
done
exit $fail
