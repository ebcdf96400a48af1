# call 3: the folded forward steps as default: Fashion-MNIST gka_tiny (3 seeds, 4 epochs) beside the kernel GPU tests
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
STUDY_DEADLINE_S=430 STUDY_GPUS=1 STUDY_MODELS="gka_tiny" EPOCHS=4 FMNIST_SRC=.device/fashion-mnist \
  OUT=$OUT/study_folded SITE=/tmp/siteA STUDY_ROOT=/tmp/studyA bash scripts/gpu_fmnist_study.sh > $OUT/study.log 2>&1 &
sleep 20
. scripts/device_env.sh
[ -d /tmp/site/fvcore ] || install_carried_wheels /tmp/site > /dev/null 2>&1
use_repo_imports /tmp/site
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
timeout 330 python3 -m pytest tests/gpu/test_gka_triton_gpu.py -v -p no:cacheprovider -o addopts= -rfE > $OUT/tests_kernels.log 2>&1
echo "kernel tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests_kernels.log | cut -c1-160
wait
grep -A6 "^| model" $OUT/study_folded/study.md | cut -c1-400
date -u
