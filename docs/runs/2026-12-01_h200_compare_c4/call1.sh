# Fashion-MNIST gka_tiny default (3 seeds) beside the rest of the GPU tests, then a host+GPU profile of compiled steps
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
STUDY_DEADLINE_S=380 STUDY_GPUS=1 STUDY_MODELS="gka_tiny" EPOCHS=4 FMNIST_SRC=.device/fashion-mnist \
  OUT=$OUT/study_default SITE=/tmp/siteA STUDY_ROOT=/tmp/studyA bash scripts/gpu_fmnist_study.sh > $OUT/studyA.log 2>&1 &
SP=$!
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
date -u
timeout 300 python3 -m pytest tests/gpu/test_gka_triton_gpu.py::test_new_T_does_not_recompile tests/gpu/test_compile_gpu.py \
  -v -p no:cacheprovider -o addopts="" -rfE \
  -k "recompile or gkavision_small or gkavision_tiny or mambavision or opcheck_selective or (reduce_overhead and not gka_tiny)" \
  > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests.log | cut -c1-160
date -u
wait $SP
grep -A6 "^| model" $OUT/study_default/study.md | cut -c1-300
date -u
wait_mamba_build 30 && echo "mamba_ssm built" 
timeout 170 python3 benchmarks/profile_step.py --batch 128 --no-eager --compile default --host \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 --json $OUT/profile.json > $OUT/profile.log 2>&1
echo "profile rc=$?"; grep -v "^{" $OUT/profile.log | grep -v Warn | head -80
date -u
