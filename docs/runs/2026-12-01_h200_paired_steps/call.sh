set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
rm -rf /tmp/oldk && cp -r .device/oldk /tmp/oldk
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
timeout 150 python3 .device/ab.py 2>&1 | tee $OUT/ab.log | grep -v Warn
date -u
timeout 110 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --shapes 128,197,6,64 4,4097,6,64 128,197,3,64 \
   --variants default --json $OUT/core_err.json > $OUT/core_err.log 2>&1; echo "core_err rc=$?"
grep "^|" $OUT/core_err.log | head -8
date -u
timeout 100 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts="" -rfE \
  -k "half_precision or fp32_qk or tail_tile or bidirectional_fp32 or zero_keys" > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests.log | cut -c1-150
date -u
