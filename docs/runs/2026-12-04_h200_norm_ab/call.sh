# session 2026-12-04, one call (about 7 minutes of device time were left): the blocks' LayerNorm kernel
# (AutocastLayerNorm) on the GPU tests, then interleaved A/B training rounds (benchmarks/ab_train.py) of the
# models with the kernel and with PyTorch's LayerNorm (@torchnorm): gka_tiny vs deit_tiny at 2048 px while
# mamba_ssm's selective scan builds, then the 224 px rows with mambavision_tiny on mamba_ssm's scan.
cd "$(dirname "$0")/../../.."
S=$OUT/status
. scripts/device_env.sh && use_repo_imports && export PYTHONUNBUFFERED=1
MAX_JOBS=12 . scripts/gpu_anchors_env.sh 2> $OUT/anchors_env.log
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  git log -1 --format='%H %s' 2>/dev/null | cut -c1-120; } > $OUT/env.log 2>&1
echo "start $(date -u +%T)" >> $S
timeout 120 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_layer_norm_gpu.py \
  > $OUT/tests.log 2>&1
echo "tests rc=$? $(date -u +%T)" >> $S
timeout 100 python3 benchmarks/ab_train.py --batch 16 --res 2048 --rounds 4 --steps 4 --warmup 2 \
  --models gka_tiny_patch16_224 deit_tiny_patch16_224 gka_tiny_patch16_224@torchnorm \
  --json $OUT/ab_2048.json > $OUT/ab_2048.log 2>&1
echo "ab_2048 rc=$? $(date -u +%T)" >> $S
wait_mamba_build 60 >> $S 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $S
cp /tmp/mamba_build/build.log $OUT/mamba_build.log 2>/dev/null
timeout 130 python3 benchmarks/ab_train.py --batch 128 --res 224 --rounds 5 --steps 8 --warmup 3 \
  --models gkavision_tiny gkavision_tiny@torchnorm mambavision_tiny gka_tiny_patch16_224 \
  gka_tiny_patch16_224@torchnorm --json $OUT/ab_224.json > $OUT/ab_224.log 2>&1
echo "ab_224 rc=$? $(date -u +%T)" >> $S
echo "done $(date -u +%T)" >> $S
cat $S; tail -4 $OUT/tests.log; cat $OUT/ab_2048.log $OUT/ab_224.log | grep -v Warning | tail -14
