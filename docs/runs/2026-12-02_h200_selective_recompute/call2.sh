# session 2026-12-02 23:40, call 2: the compiled pairs of call 1 at 1024 px (batch 16), then the GPU test of
# selective recomputation (eager and compiled)
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
C="python3 benchmarks/compare.py --no-plots --warmup 2 --point-time-s 0.75 --no-flops --batch-sizes 16 --first-step-limit-s 150"
mkdir -p $OUT/compiled1024
timeout 330 $C --time-budget-s 310 --res 1024 --resolutions 1024 --memory-res 1024 --out $OUT/compiled1024 \
  --models gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile gka_tiny_patch16_224@noselective+compile \
  > $OUT/compiled1024/compare.log 2>&1
echo "compiled rc=$?"; date -u
grep -E "^\| (gka|deit)" $OUT/compiled1024/compare.md | cut -c1-230
timeout 200 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py -k "selective" \
  > $OUT/tests_selective.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout|^E " $OUT/tests_selective.log | cut -c1-200 | head -20
date -u
