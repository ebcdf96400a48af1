# call 5: the kernel tests call 4's bound cut off (the command, as run)
. scripts/device_env.sh; use_repo_imports /tmp/site; export PYTHONPATH="$PYTHONPATH:$PWD/tests"
timeout 175 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts= -rfE \
  -k "bf16-bi-196-80 or fp16-bi-197-64 or fp32_qk or tail_tile or sequential or zero or long_sequence or new_T" \
  > $OUT/tests_kernels2.log 2>&1
