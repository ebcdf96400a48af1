# session 2026-12-03 (evening), job of call 3 (started by call3.sh in its own process session; wait.sh follows it):
# the conv layout A/B (ab_conv_layout.py) and the model GPU tests while mamba_ssm's selective scan builds, then
# compare.py's target points on the code with the fused kernels and the channels-last conv, eager and compiled.
set -o pipefail
cd "$(dirname "$0")/../../.."
J=/tmp/job
mkdir -p $J
. scripts/device_env.sh && device_call_setup /tmp/site || { echo "setup failed" >> $J/status; exit 1; }
MAX_JOBS=10 . scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  git log -1 --format='%H %s' 2>/dev/null | cut -c1-120; } > $J/env3.log 2>&1
echo "start $(date -u +%T)" >> $J/status
timeout 120 python3 docs/runs/2026-12-03_h200_fused_pointwise/ab_conv_layout.py > $J/ab_conv_layout.log 2>&1
echo "ab rc=$? $(date -u +%T)" >> $J/status
timeout 300 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py \
  > $J/tests3.log 2>&1
echo "tests rc=$? $(date -u +%T)" >> $J/status
wait_mamba_build 300 >> $J/status 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $J/status
timeout 560 python3 benchmarks/compare.py --out $J/compare3 --time-budget-s 500 --no-plots --warmup 2 \
  --point-time-s 1.5 --no-flops --batch-sizes 128 --res 224 --resolutions 1024 2048 --sweep-batch 16 \
  --memory-res 1024 --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 gkavision_tiny@compile \
  mambavision_tiny@compile gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile > $J/compare3.log 2>&1
echo "compare rc=$? $(date -u +%T)" >> $J/status
echo "done $(date -u +%T)" >> $J/status
