# session 2026-12-02 15:40, call 4: the compile GPU tests of the GKA ops and models that call 3's bound did not
# reach (opcheck of the Triton GKA ops, gkavision_tiny compiled vs eager, the no-retrace check), in one process
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
timeout 330 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_compile_gpu.py \
   -k "opcheck_triton_gka or matches_eager_bf16 and gkavision_tiny or does_not_retrace" > $OUT/tests_compile_rest.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout" $OUT/tests_compile_rest.log | cut -c1-180
date -u
