# the core beside the anchors in one process (while mamba_ssm's scan builds), then the model comparison
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
timeout 165 python3 benchmarks/bench_gka_core.py --no-torch --no-errors --shapes 128,197,6,64 4,4097,6,64 \
   --variants default --json $OUT/core.json > $OUT/core.log 2>&1; echo "core rc=$?"
grep "^|" $OUT/core.log
date -u
TOTAL_S=390 TESTS_S=25 MAMBA_WAIT_S=60 OUT=$OUT bash scripts/gpu_compare.sh --batch-sizes 128 --resolutions 224 1024 2048 \
  --no-flops --models gkavision_tiny gkavision_tiny@compile mambavision_tiny mambavision_tiny@compile \
  gkavision_tiny@hd32 gkavision_tiny@hd32+compile gka_tiny_patch16_224 gka_tiny_patch16_224@compile \
  deit_tiny_patch16_224 deit_tiny_patch16_224@compile > $OUT/compare_run.log 2>&1; echo "compare rc=$?"
sed -n '/^| model/,/^$/p' $OUT/compare/compare.md | head -40 | cut -c1-250
date -u
