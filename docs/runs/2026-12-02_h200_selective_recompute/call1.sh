# session 2026-12-02 23:20, call 1: selective recomputation (the blocks recompute all but their scans, on by
# default from 1024 tokens). gka_tiny with it (the default) and without (@noselective) beside deit_tiny, batch 16:
# eager at 1024 and 2048 px (one compare.py run), compiled at 2048 px (a second run); then its GPU test
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
C="python3 benchmarks/compare.py --no-plots --warmup 2 --point-time-s 0.75 --no-flops --batch-sizes 16 --first-step-limit-s 150"
mkdir -p $OUT/eager $OUT/compiled2048
timeout 200 $C --time-budget-s 180 --res 1024 --resolutions 1024 2048 --memory-res 1024 --out $OUT/eager \
  --models gka_tiny_patch16_224 gka_tiny_patch16_224@noselective deit_tiny_patch16_224 > $OUT/eager/compare.log 2>&1
echo "eager rc=$?"; date -u
timeout 290 $C --time-budget-s 270 --res 2048 --resolutions 2048 --memory-res 2048 --out $OUT/compiled2048 \
  --models gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile gka_tiny_patch16_224@noselective+compile \
  > $OUT/compiled2048/compare.log 2>&1
echo "compiled rc=$?"; date -u
for d in eager compiled2048; do echo "== $d"; grep -E "^\| (gka|deit)" $OUT/$d/compare.md | cut -c1-230; done
timeout 80 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py -k "selective and not True" \
  > $OUT/tests_selective.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout|^E " $OUT/tests_selective.log | cut -c1-200 | head -20
date -u
