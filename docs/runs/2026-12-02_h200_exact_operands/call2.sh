# session 2026-12-02, call 2: Fashion-MNIST check (gka_tiny, gkavision_tiny, 3 seeds x 4 epochs) of a shorter bf16-input
# solver schedule, from a copy of the tree whose _HALF default is changed by sed; beside it, on the committed tree
# (exact_operands on by default), the compile and model GPU tests; mamba_ssm's scan builds in the background for call 3
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
REPO=$PWD
rm -rf /tmp/repoS && mkdir /tmp/repoS && cp -r kernels gka_vision configs scripts benchmarks train.py eval.py pyproject.toml /tmp/repoS/ 2>/dev/null
cp -r .whl /tmp/repoS/
sed -i 's|_HALF = GKAKernelConfig(schedule="bf16:15+2xbf16:12/bf16:12+2xbf16:12")|_HALF = GKAKernelConfig(schedule="bf16:12+2xbf16:10/bf16:10+2xbf16:10")|' /tmp/repoS/kernels/gka_function.py
grep -n "^_HALF" /tmp/repoS/kernels/gka_function.py
( cd /tmp/repoS && STUDY_DEADLINE_S=430 STUDY_GPUS=1 STUDY_MODELS="gka_tiny gkavision_tiny" EPOCHS=4 \
  FMNIST_SRC=$REPO/.device/fashion-mnist OUT=$OUT/fmnist_study SITE=/tmp/siteS STUDY_ROOT=/tmp/studyS \
  bash scripts/gpu_fmnist_study.sh > $OUT/study.log 2>&1 ) &
SP=$!
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests"
sleep 20
timeout 380 python3 -m pytest tests/gpu/test_compile_gpu.py tests/gpu/test_models_gpu.py -v -p no:cacheprovider \
  -o addopts="" -rfE > $OUT/tests_compile_models.log 2>&1; echo "tests rc=$?"
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_compile_models.log | cut -c1-180
date -u
wait $SP
grep -A6 "^| model" $OUT/fmnist_study/study.md | cut -c1-300
date -u
wait_mamba_build 5 && echo "mamba_ssm built"
date -u
