# session 2026-12-02, call 4 (as one command line): the kernel GPU tests with the shorter bf16 schedule still set in the tree
. scripts/device_env.sh; use_repo_imports /tmp/site; export PYTHONPATH="$PYTHONPATH:$PWD/tests"; date -u
timeout 280 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts= -rfE -x 2>&1 \
  | tee $OUT/tests_kernels.log | grep -E "PASSED|FAILED|ERROR|passed|failed|Error" | cut -c1-200; date -u
