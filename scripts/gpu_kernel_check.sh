#!/usr/bin/env bash
# GPU check of the Triton GKA core: correctness tests (tests/gpu) then the benchmark table.
# Meant for the device tool (`run`): logs go to $OUT (default output/gpu_check).
#   bash scripts/gpu_kernel_check.sh [tests|bench|all|quick] [extra benchmark args...]
# quick: a subset of the tests (D 64 and 128, T = 1, one direction, zero keys, bf16 and fp16, no recompilation) and the benchmark
# with the default config only and without the slow torch backend (about 3-4 minutes on an H200).
# Env TESTS_TIMEOUT / BENCH_TIMEOUT (seconds, default 400 each) bound the two halves of `all`.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_check}
mkdir -p "$OUT"
what=${1:-all}; shift || true
. scripts/device_env.sh
use_repo_imports
export PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$OUT/env.log"
import torch, triton, gka_kernels, gka_vision
print("gpu", torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
PY
rc=0
if [ "$what" = quick ]; then
    python3 -m pytest tests/gpu -v -s -p no:cacheprovider -o addopts="" \
        -k "197-64 or 65-128 or 1-64 or zero or recompile" 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
    python3 benchmarks/bench_gka_core.py --no-torch --profile --json "$OUT/bench.json" "$@" 2>&1 \
        | tee "$OUT/bench.log" || rc=1
fi
if [ "$what" = tests ] || [ "$what" = all ]; then
    timeout "${TESTS_TIMEOUT:-400}" python3 -m pytest tests/gpu -v -s -p no:cacheprovider -o addopts="" 2>&1 \
        | tee "$OUT/gpu_tests.log" || rc=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    timeout "${BENCH_TIMEOUT:-400}" python3 benchmarks/bench_gka_core.py --profile --json "$OUT/bench.json" "$@" 2>&1 \
        | tee "$OUT/bench.log" || rc=1
fi
exit $rc
