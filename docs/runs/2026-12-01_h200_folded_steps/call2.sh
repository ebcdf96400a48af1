# call 2: compare.py with the folded forward steps default: gka_tiny vs deit_tiny compiled at 224 (default mode and
# CUDA graphs) and compiled at 1024 / 2048 px (--compiled-sweep), eager at 1024 / 2048
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
[ -d /tmp/site/fvcore ] || install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
date -u
timeout 560 python3 benchmarks/compare.py --out $OUT/compare --time-budget-s 500 --no-plots --warmup 2 \
  --point-time-s 0.75 --no-flops --batch-sizes 128 --resolutions 224 1024 2048 --compiled-sweep --first-step-limit-s 150 \
  --models gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile gka_tiny_patch16_224 deit_tiny_patch16_224 \
  gka_tiny_patch16_224@cudagraphs deit_tiny_patch16_224@cudagraphs > $OUT/compare.log 2>&1; echo "compare rc=$?"
grep "^\[compare\]" $OUT/compare.log | cut -c1-220
date -u
