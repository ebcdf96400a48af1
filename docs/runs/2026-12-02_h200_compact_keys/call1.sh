# session 2026-12-02 15:40, call 1: the solve kernels holding exact bf16 keys as bf16 tiles (this checkout) beside
# the kernels of commit bf70024 (carried as .device/base_kernels: `git archive bf70024 kernels | tar -x -C
# .device/base_kernels`), in one process, alternating rounds; then the kernel and model GPU tests on this checkout
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
timeout 230 python3 benchmarks/bench_kernel_revision.py --base .device/base_kernels --rounds 3 \
   --shapes 128,197,6,64 4,4097,6,64 128,196,4,40 --json $OUT/revision.json > $OUT/revision.log 2>&1
echo "revision rc=$?"; cat $OUT/revision.log | cut -c1-200 | tail -8
date -u
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
PT="python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE"
timeout 340 $PT tests/gpu/test_gka_triton_gpu.py > $OUT/tests_kernels.log 2>&1 &
timeout 340 $PT tests/gpu/test_models_gpu.py tests/gpu/test_selective_scan_gpu.py > $OUT/tests_models.log 2>&1 &
wait
for f in tests_kernels tests_models; do
  echo "== $f"; grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout" $OUT/$f.log | cut -c1-180
done
date -u
