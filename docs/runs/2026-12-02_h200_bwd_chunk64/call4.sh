# session 2026-12-02 04:00, call 4 (the command as sent, on the warm machine): gkavision_small's compile-vs-eager
# test, which call 3 left out for time
. scripts/device_env.sh && device_call_setup /tmp/site && export PYTHONPATH="$PYTHONPATH:$PWD/tests" && timeout 170 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_compile_gpu.py -k "compiled_model_matches and gkavision_small" 2>&1 | tee $OUT/tests_compile_gkavision_small.log | grep -E "PASSED|FAILED|passed|failed|rror"
