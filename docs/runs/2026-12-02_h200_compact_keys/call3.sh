# session 2026-12-02 15:40, call 3: the kernel GPU tests call 1's bound did not reach, and the compile GPU tests,
# on this checkout, in two pytest processes side by side
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
PT="python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE"
timeout 540 $PT tests/gpu/test_gka_triton_gpu.py -k "exact_operands or sequential or zero or long_sequence or new_T" \
   > $OUT/tests_kernels_rest.log 2>&1 &
timeout 540 $PT tests/gpu/test_compile_gpu.py > $OUT/tests_compile.log 2>&1 &
wait
for f in tests_kernels_rest tests_compile; do
  echo "== $f"; grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout" $OUT/$f.log | cut -c1-180
done
date -u
