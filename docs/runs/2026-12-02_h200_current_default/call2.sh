# session 2026-12-02, call 2 (a fresh machine: call 1's was released): mamba_ssm's selective scan built by the committed
# recipe, then run C6's 224 px pairs on the current default (64-token backward chunks, the default bf16-input
# schedule): gkavision_tiny vs mambavision_tiny (mamba_ssm's CUDA scan) and gka_tiny vs deit_tiny, eager / compiled /
# CUDA graphs, the target pairs first
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
MAX_JOBS=10 . scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
date -u
wait_mamba_build 200 && echo "mamba_ssm built"
date -u
timeout 370 python3 benchmarks/compare.py --out $OUT/compare --time-budget-s 350 --no-plots --warmup 2 \
  --point-time-s 0.75 --no-flops --batch-sizes 128 --resolutions 224 --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile \
  gkavision_tiny@cudagraphs mambavision_tiny@cudagraphs gkavision_tiny@compile mambavision_tiny@compile \
  gka_tiny_patch16_224@cudagraphs deit_tiny_patch16_224@cudagraphs > $OUT/compare.log 2>&1; echo "compare rc=$?"
grep "^\[compare\]" $OUT/compare.log | cut -c1-220
cp /tmp/mamba_build/build.log $OUT/mamba_build.log 2>/dev/null
date -u
