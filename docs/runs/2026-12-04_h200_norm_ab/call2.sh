# session 2026-12-04, call 2 (fresh machine, about 6 minutes of device time left): the two model tests of the
# LayerNorm kernel (the first call's 120 s ran out in the second), then A/B rounds with the size threshold
# (AutocastLayerNorm.fused_min_numel, default 2^23 elements): gka_tiny at 1024 px (12.6M elements a norm: the kernel)
# and the 224 px rows (below the threshold: the default rows run PyTorch's op, as @torchnorm).
cd "$(dirname "$0")/../../.."
S=$OUT/status
. scripts/device_env.sh && use_repo_imports && export PYTHONUNBUFFERED=1
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  } > $OUT/env2.log 2>&1
echo "start $(date -u +%T)" >> $S
timeout 110 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_layer_norm_gpu.py -k models \
  > $OUT/tests2.txt 2>&1
echo "tests rc=$? $(date -u +%T)" >> $S
timeout 75 python3 benchmarks/ab_train.py --batch 16 --res 1024 --rounds 4 --steps 4 --warmup 2 \
  --models gka_tiny_patch16_224 gka_tiny_patch16_224@torchnorm deit_tiny_patch16_224 \
  --json $OUT/ab_1024.json > $OUT/ab_1024.log 2>&1
echo "ab_1024 rc=$? $(date -u +%T)" >> $S
timeout 70 python3 benchmarks/ab_train.py --batch 128 --res 224 --rounds 5 --steps 8 --warmup 3 \
  --models gkavision_tiny gkavision_tiny@torchnorm gka_tiny_patch16_224 gka_tiny_patch16_224@torchnorm \
  --json $OUT/ab_224_threshold.json > $OUT/ab_224_threshold.log 2>&1
echo "ab_224 rc=$? $(date -u +%T)" >> $S
echo "done $(date -u +%T)" >> $S
cat $S; grep -E "PASS|FAIL|Error|assert|passed|failed" $OUT/tests2.txt | tail -8
cat $OUT/ab_1024.log $OUT/ab_224_threshold.log | grep -v Warning | tail -12
