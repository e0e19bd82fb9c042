#!/usr/bin/env bash
# The dws-cuda GPU check, in one go, on a machine with an NVIDIA GPU (H200).
# Builds nothing: run dws-cuda/build-gpu-bins.sh on the development machine
# first and carry dws-cuda/gpu-bin/ along with the working tree.
#
# Usage, from the repository root:
#   dws-cuda/gpu-check.sh [/path/to/upstream/DWSNets]
# Environment: BIN (dws-cuda/gpu-bin), LOG (gpu-check.log in $OUT when set,
# else dws-cuda/gpu-check.log), BATCH (4096), ITERS (20), STEP_TIMEOUT (240 s),
# TORCH_TIMEOUT (420 s).
#
# Steps, all output to the log:
#   1. environment: nvidia-smi, CUDA libraries found (system, /usr/local/cuda,
#      pip nvidia-* wheels), added to LD_LIBRARY_PATH;
#   2. the GPU reference suite: f32 within tolerance, int8 and 16x8 bit-exact
#      (tests/gpu.rs);
#   3. benchmarks of tests/fixtures/paper_default: batch $BATCH throughput and
#      batch 1 latency, f32 (TF32 off, then on), int8 and 16x8; `dws run` (the
#      quantized outputs compared byte for byte with the CPU's) and `dws bench`
#      with `--engine cuda`;
#   4. upstream PyTorch eager and torch.compile on the same GPU (bench_torch.py),
#      when an upstream checkout is given and torch imports.
set -u
root=$(pwd)
upstream=${1:-}
BIN=${BIN:-dws-cuda/gpu-bin}
BATCH=${BATCH:-4096}
ITERS=${ITERS:-20}
if [ -n "${OUT:-}" ]; then LOG=${LOG:-$OUT/gpu-check.log}; else LOG=${LOG:-dws-cuda/gpu-check.log}; fi
mkdir -p "$(dirname "$LOG")"
exec > >(tee -a "$LOG") 2>&1

step() { echo; echo "=== $* ($(date -u +%H:%M:%S) UTC)"; }
run() {
    echo "+ $*"
    timeout "${STEP_TIMEOUT:-240}" "$@"
    local rc=$?
    echo "exit $rc"
    return 0
}

step "environment"
echo "repository: $root, binaries: $BIN ($(cat "$BIN/COMMIT" 2>/dev/null || echo unknown commit))"
run nvidia-smi
uname -a
ldd --version 2>&1 | head -1
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
# CUDA libraries shipped as pip wheels (nvidia-cuda-nvrtc, nvidia-cublas, ...).
pylibs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib")) + glob.glob(os.path.join(base, "nvidia", "cu*", "lib")):
        dirs.add(lib)
print(":".join(sorted(dirs)))
PY
)
[ -n "$pylibs" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$pylibs"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcuda.so libnvrtc.so libcublas.so libcublasLt.so; do
    found=$( (ldconfig -p 2>/dev/null | grep -o "/[^ ]*$lib[.0-9]*" ; \
        IFS=:; for d in $LD_LIBRARY_PATH; do ls "$d"/$lib* 2>/dev/null; done) | sort -u | tr '\n' ' ')
    echo "$lib: ${found:-NOT FOUND}"
done

step "GPU reference suite (f32 within tolerance, int8 and 16x8 bit-exact)"
export DWS_FIXTURES_DIR="$root/tests/fixtures"
run "$BIN/gpu-tests" --test-threads=1 --nocapture

step "benchmarks: paper_default"
f32=tests/fixtures/paper_default/model.dws
i8=tests/fixtures/paper_default/model.int8.dws
x16=tests/fixtures/paper_default/model.16x8.dws
inputs=tests/fixtures/paper_default/inputs.safetensors
run "$BIN/dws-cuda-bench" "$f32" --batch "$BATCH" --iters "$ITERS"
run "$BIN/dws-cuda-bench" "$f32" --batch "$BATCH" --iters "$ITERS" --tf32
run "$BIN/dws-cuda-bench" "$f32" --batch 65536 --iters 5
run "$BIN/dws-cuda-bench" "$i8" --batch "$BATCH" --iters "$ITERS"
run "$BIN/dws-cuda-bench" "$x16" --batch "$BATCH" --iters "$ITERS"
# The CLI on the GPU: the suite's inputs through `dws run --engine cuda` (the
# quantized blobs' outputs must equal the CPU's byte for byte), and
# `dws bench --engine cuda` next to the CPU fast engine.
outs=${OUT:-/tmp}
run "$BIN/dws" run --engine cuda "$f32" "$inputs" -o "$outs/paper_default.cuda.safetensors"
for mode in int8 16x8; do
    blob=tests/fixtures/paper_default/model.$mode.dws
    run "$BIN/dws" run --engine cuda "$blob" "$inputs" -o "$outs/paper_default.$mode.cuda.safetensors"
    run "$BIN/dws" run "$blob" "$inputs" -o "$outs/paper_default.$mode.cpu.safetensors"
    run cmp "$outs/paper_default.$mode.cuda.safetensors" "$outs/paper_default.$mode.cpu.safetensors"
done
run "$BIN/dws" bench --engine cuda --batch "$BATCH" --seconds 3 "$f32"
run "$BIN/dws" bench --engine cuda --batch "$BATCH" --seconds 3 "$i8"
run "$BIN/dws" bench --engine cuda --batch "$BATCH" --seconds 3 "$x16"
run "$BIN/dws" bench --batch 64 --seconds 3 "$f32"

step "upstream PyTorch on the same GPU"
if [ -z "$upstream" ]; then
    echo "SKIPPED: no upstream DWSNets checkout given (dws-cuda/gpu-check.sh /path/to/DWSNets)"
elif ! python3 -c "import torch" 2>/dev/null; then
    echo "SKIPPED: python3 cannot import torch"
else
    STEP_TIMEOUT=${TORCH_TIMEOUT:-420} run python3 dws-cuda/bench_torch.py --upstream "$upstream" --batch "$BATCH" --iters "$ITERS"
fi

step "done; log in $LOG"
