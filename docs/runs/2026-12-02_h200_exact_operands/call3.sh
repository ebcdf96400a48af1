# session 2026-12-02, call 3: gkavision_tiny vs mambavision_tiny (mamba_ssm's CUDA scan, built in call 2) and gka_tiny vs
# deit_tiny at 224 px, eager / compiled / CUDA graphs, on the defaults with exact operands and the shorter bf16 schedule
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
[ -d /tmp/site/fvcore ] || install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
wait_mamba_build 100 && echo "mamba_ssm built"
date -u; grep -n "^_HALF" kernels/gka_function.py
timeout 560 python3 benchmarks/compare.py --out $OUT/compare --time-budget-s 520 --no-plots --warmup 2 \
  --point-time-s 0.75 --no-flops --batch-sizes 128 --resolutions 224 --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gkavision_tiny@compile mambavision_tiny@compile \
  gkavision_tiny@cudagraphs mambavision_tiny@cudagraphs gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile \
  gka_tiny_patch16_224@cudagraphs deit_tiny_patch16_224@cudagraphs > $OUT/compare.log 2>&1; echo "compare rc=$?"
grep "^\[compare\]" $OUT/compare.log | cut -c1-220
date -u
