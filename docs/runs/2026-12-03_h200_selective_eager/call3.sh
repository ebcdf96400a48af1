# session 2026-12-03 09:05, call 3: call 2 again after the kept scan outputs stopped forming a reference cycle (in
# call 2 they waited for the garbage collector, and the peaks of the points after the first grew with them)
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
C="python3 benchmarks/compare.py --no-plots --warmup 2 --point-time-s 0.75 --no-flops --batch-sizes 16 --first-step-limit-s 150"
mkdir -p $OUT/eager
timeout 200 $C --time-budget-s 180 --res 1024 --resolutions 1024 2048 --memory-res 1024 --out $OUT/eager \
  --models gka_tiny_patch16_224 gka_tiny_patch16_224@noselective deit_tiny_patch16_224 > $OUT/eager/compare.log 2>&1
echo "eager rc=$?"; date -u
grep -E "^\| (gka|deit)" $OUT/eager/compare.md | cut -c1-230
P="python3 benchmarks/profile_step.py --models gka_tiny_patch16_224 --batch 16 --res 1024 --steps 3 --warmup 2 --host"
timeout 150 $P --json $OUT/selective.json > $OUT/selective.log 2>&1; echo "selective rc=$?"
timeout 150 $P --json $OUT/noselective.json --model-kwargs '{"gka_tiny_patch16_224": {"selective_recompute": false}}' \
  > $OUT/noselective.log 2>&1; echo "noselective rc=$?"
for f in selective noselective; do echo "== $f"; grep -A2 "^| model" $OUT/$f.log; grep -A6 "top self" $OUT/$f.log; done
timeout 120 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py -k "selective" \
  > $OUT/tests_selective.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout|^E " $OUT/tests_selective.log | cut -c1-200 | head -20
date -u
