# call 3: compiled training steps with CUDA graphs (reduce-overhead) vs default compile, same process per mode
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
wait_mamba_build 30 && echo "mamba_ssm built"
date -u
timeout 330 python3 benchmarks/profile_step.py --batch 128 --no-eager --compile reduce-overhead \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 --json $OUT/profile_ro.json \
  > $OUT/profile_ro.log 2>&1; echo "ro rc=$?"; grep "^|" $OUT/profile_ro.log; grep -c error $OUT/profile_ro.log
date -u
timeout 200 python3 benchmarks/profile_step.py --batch 128 --no-eager --compile default \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 --json $OUT/profile_default.json \
  > $OUT/profile_default.log 2>&1; echo "default rc=$?"; grep "^|" $OUT/profile_default.log
date -u
