# call 4: GPU tests: train.py under CUDA graphs (new), mamba_vim_tiny reduce-overhead, the kernel tests on the
# paired-forward default
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
date -u
T="-v -p no:cacheprovider -o addopts= -rfE"
timeout 170 python3 -m pytest tests/gpu/test_compile_gpu.py -k "train_py_reduce_overhead" $T > $OUT/tests_train_ro.log 2>&1
echo "train_ro rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_train_ro.log | cut -c1-200
date -u
timeout 110 python3 -m pytest "tests/gpu/test_compile_gpu.py::test_reduce_overhead_training_steps[mamba_vim_tiny_patch16_224]" $T > $OUT/tests_vim_ro.log 2>&1
echo "vim_ro rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_vim_ro.log | cut -c1-200
date -u
timeout 210 python3 -m pytest tests/gpu/test_gka_triton_gpu.py $T > $OUT/tests_kernels.log 2>&1
echo "kernels rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_kernels.log | cut -c1-200
date -u
