# session 2026-12-02 04:00, call 2: the new default (64-token backward chunks, split backward solve) timed beside
# the old one (chunk=32, one launch) with the per-kernel split; then every GPU test on the new default, in two
# pytest processes side by side (kernels + models; compile + selective scan)
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
S="128,197,6,64 4,4097,6,64 128,197,3,64 128,196,4,40 128,49,8,40"
timeout 150 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --profile --shapes $S \
   --variants default chunk=32,split_backward=0 --json $OUT/core_default.json > $OUT/core_default.log 2>&1
echo "timing rc=$?"; grep -A6 "^Kernel variants" $OUT/core_default.log; grep -A14 "^per-kernel" $OUT/core_default.log
date -u
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
PT="python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE"
timeout 400 $PT tests/gpu/test_gka_triton_gpu.py tests/gpu/test_models_gpu.py > $OUT/tests_kernels_models.log 2>&1 &
timeout 400 $PT tests/gpu/test_compile_gpu.py tests/gpu/test_selective_scan_gpu.py > $OUT/tests_compile.log 2>&1 &
wait
for f in tests_kernels_models tests_compile; do
  echo "== $f"; grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout" $OUT/$f.log | cut -c1-180
done
date -u
