# session 2026-12-03 (evening), call 2: where gka_tiny's eager step at 2048 px goes with the fused kernels
# (profile_step.py, batch 16), and the mixer GPU tests again after their fp32 tolerance follows the core's targets
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
date -u
timeout 200 python3 benchmarks/profile_step.py --batch 16 --res 2048 --steps 2 --warmup 2 \
  --models gka_tiny_patch16_224 --json $OUT/profile_2048.json > $OUT/profile_2048.log 2>&1
echo "profile rc=$?"; grep '^|' $OUT/profile_2048.log
timeout 150 python3 -m pytest -q -p no:cacheprovider -o addopts= -rfE tests/gpu/test_mixer_pointwise_gpu.py \
  > $OUT/tests_pointwise.log 2>&1
echo "tests rc=$?"; tail -3 $OUT/tests_pointwise.log
date -u
