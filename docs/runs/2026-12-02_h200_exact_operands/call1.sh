# session 2026-12-02 01:30, call 1: exact bf16 operands timed beside the default (one process) at the 197/4097-token
# shapes and gkavision's two; a shorter bf16 schedule beside it; their errors; the bit-identity GPU test
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
date -u; nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
S="128,197,6,64 4,4097,6,64 128,197,3,64 128,196,4,40 128,49,8,40"
V="default exact_operands=1 exact_operands=1,schedule=bf16:12+2xbf16:10/bf16:10+2xbf16:10"
timeout 230 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --shapes $S \
   --variants $V --json $OUT/core_exact.json > $OUT/core_exact.log 2>&1
echo "exact rc=$?"; grep -A8 "^Kernel variants" $OUT/core_exact.log
date -u
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
timeout 130 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts= -rfE \
   -k "exact_operands" > $OUT/tests_exact.log 2>&1
echo "tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_exact.log | cut -c1-200
date -u
timeout 150 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --shapes 128,197,6,64 128,196,4,40 \
   --variants $V --json $OUT/core_exact_err.json > $OUT/core_exact_err.log 2>&1
echo "exact_err rc=$?"; grep -A8 "^Kernel variants" $OUT/core_exact_err.log; grep -i -B2 -A12 "error" $OUT/core_exact_err.log | head -60
date -u
