#!/usr/bin/env bash
# Builds, on a development machine (no GPU or CUDA needed), everything
# gpu-check.sh runs on a GPU machine, into dws-cuda/gpu-bin/:
#   gpu-tests        the GPU reference suite (tests/gpu.rs), release build
#   dws-cuda-bench   throughput and latency of a blob
#   dws              the CLI with `--engine cuda` (dws-host's `cuda` feature)
# Usage, from the repository root: dws-cuda/build-gpu-bins.sh
# (CARGO_TARGET_DIR is honoured; CUDA_API=cuda-12080 builds everything for a
#  CUDA 12 driver instead of CUDA 13.)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
out=dws-cuda/gpu-bin
rm -rf "$out"
mkdir -p "$out"
api=${CUDA_API:-cuda-13000}
cargo build --release -p dws-cuda --bin dws-cuda-bench --no-default-features --features "$api"
cargo build --release -p dws-host --bin dws --features "$api"
tests=$(cargo test --release -p dws-cuda --test gpu --no-run --message-format=json \
    --no-default-features --features "$api" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])')
cp "$tests" "$out/gpu-tests"
cp "$target/release/dws-cuda-bench" "$target/release/dws" "$out/"
strip "$out"/* 2>/dev/null || true
git rev-parse HEAD > "$out/COMMIT" 2>/dev/null || true
ls -la "$out"
du -sh "$out"
