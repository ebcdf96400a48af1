# call 4 (fresh machine, about 6.5 minutes of device time left): after the fix of autocast_output_dtype under
# torch.compile (commit after 63bb463): the fullgraph compile GPU test of the two GKA families while mamba_ssm's
# scan builds, then compare.py's compiled target rows (and the eager pair) again.
cd "$(dirname "$0")/../../.."
S=$OUT/status
. scripts/device_env.sh && device_call_setup /tmp/site > $OUT/setup.log 2>&1
MAX_JOBS=14 . scripts/gpu_anchors_env.sh 2> $OUT/anchors_env.log
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests" PYTHONUNBUFFERED=1
echo "start $(date -u +%T)" >> $S
timeout 130 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_compile_gpu.py \
  -k "matches_eager_bf16 and (gkavision_tiny or gka_tiny_patch16_224)" > $OUT/tests_compile.log 2>&1
echo "tests rc=$? $(date -u +%T)" >> $S
wait_mamba_build 90 >> $S 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $S
timeout 250 python3 benchmarks/compare.py --out $OUT/compare --time-budget-s 230 --no-plots --warmup 2 \
  --point-time-s 1.0 --no-flops --batch-sizes 128 --res 224 --resolutions 224 --memory-res 224 --first-step-limit-s 120 \
  --models gkavision_tiny@compile mambavision_tiny@compile gka_tiny_patch16_224@compile \
  deit_tiny_patch16_224@compile gkavision_tiny mambavision_tiny > $OUT/compare.log 2>&1
echo "compare rc=$? $(date -u +%T)" >> $S
cat $S; grep -E "PASS|FAIL|passed|failed|error vs" $OUT/tests_compile.log | tail -6
grep -c "does not know how to trace" $OUT/compare.log; grep "img/s" $OUT/compare.log | tail -8
