# session 2026-12-01 23:10, call 1: folded Chebyshev steps timed beside the default (one process), their errors
# at the 197-token shapes; the four kernel tests not reached on the current kernels
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
date -u; nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
S="128,197,6,64 4,4097,6,64 128,197,3,64"
V="default folded_steps=fwd folded_steps=both folded_steps=both,paired_steps=both"
timeout 200 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --shapes $S \
   --variants $V --json $OUT/core_folded.json > $OUT/core_folded.log 2>&1
echo "folded rc=$?"; grep -A8 "^Kernel variants" $OUT/core_folded.log
date -u
timeout 150 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --shapes 128,197,6,64 128,197,3,64 \
   --variants $V --json $OUT/core_folded_err.json > $OUT/core_folded_err.log 2>&1
echo "folded_err rc=$?"; grep -A8 "^Kernel variants" $OUT/core_folded_err.log
date -u
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
timeout 170 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts= -rfE \
   -k "zero_keys or all_keys_zero or long_sequence or new_T_does_not_recompile" > $OUT/tests_rest.log 2>&1
echo "tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_rest.log | cut -c1-200
date -u
