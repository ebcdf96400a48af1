# session 2026-12-03 (night), job of call 2 (started by call2.sh in its own process session; wait.sh follows it):
# the blocks' LayerNorm kernel with the autocast dtype out (kernels/layer_norm.py) and the gated RMSNorm's autocast
# output: GPU tests, gka_tiny's op profile at 2048 px, then compare.py's target points with mamba_ssm's selective
# scan (built meanwhile) and the @torchnorm rows (the blocks' norms as PyTorch's op, then the rounding).
set -o pipefail
cd "$(dirname "$0")/../../.."
J=/tmp/job
mkdir -p $J
. scripts/device_env.sh && device_call_setup /tmp/site || { echo "setup failed" >> $J/status; exit 1; }
MAX_JOBS=10 . scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  git log -1 --format='%H %s' 2>/dev/null | cut -c1-120; } > $J/env.log 2>&1
echo "start $(date -u +%T)" >> $J/status
timeout 300 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_layer_norm_gpu.py \
  tests/gpu/test_mixer_pointwise_gpu.py tests/gpu/test_models_gpu.py > $J/tests.log 2>&1
echo "tests rc=$? $(date -u +%T)" >> $J/status
timeout 150 python3 benchmarks/profile_step.py --batch 16 --res 2048 --steps 2 --warmup 2 --ops 30 \
  --models gka_tiny_patch16_224 --json $J/ops_2048_ln.json > $J/ops_2048_ln.log 2>&1
echo "profile rc=$? $(date -u +%T)" >> $J/status
wait_mamba_build 300 >> $J/status 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $J/status
cp /tmp/mamba_build/build.log $J/mamba_build.log 2>/dev/null
timeout 700 python3 benchmarks/compare.py --out $J/compare --time-budget-s 640 --no-plots --warmup 2 \
  --point-time-s 1.5 --no-flops --batch-sizes 128 --res 224 --resolutions 1024 2048 --sweep-batch 16 \
  --memory-res 1024 --first-step-limit-s 150 \
  --models gka_tiny_patch16_224 deit_tiny_patch16_224 gka_tiny_patch16_224@torchnorm gkavision_tiny \
  mambavision_tiny gkavision_tiny@torchnorm gkavision_tiny@compile mambavision_tiny@compile \
  gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile > $J/compare.log 2>&1
echo "compare rc=$? $(date -u +%T)" >> $J/status
echo "done $(date -u +%T)" >> $J/status
