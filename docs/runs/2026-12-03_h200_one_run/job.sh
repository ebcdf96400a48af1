# session 2026-12-03 (afternoon): every target point of issue 11 on the current code in one run, as one background
# job on one machine (started by call1.sh in its own process session; call2.sh ... wait for it and copy /tmp/job):
# the core (no anchors) with errors and the per-launch profile while mamba_ssm's selective scan builds, then
# compare.py's target points, then profile_step.py (where a training step's time goes), then the model GPU tests.
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
timeout 220 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --profile \
  --shapes 128,197,6,64 4,4097,6,64 128,197,3,64 128,196,4,40 128,49,8,40 --variants default \
  --json $J/core.json > $J/core.log 2>&1
echo "core rc=$? $(date -u +%T)" >> $J/status
wait_mamba_build 300 >> $J/status 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $J/status
cp /tmp/mamba_build/build.log $J/mamba_build.log 2>/dev/null
timeout 760 python3 benchmarks/compare.py --out $J/compare --time-budget-s 700 --no-plots --warmup 2 \
  --point-time-s 0.75 --no-flops --batch-sizes 128 --res 224 --resolutions 224 1024 2048 --sweep-batch 16 \
  --memory-res 1024 --compiled-sweep --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 gka_small_patch16_224 \
  mamba_vim_small_patch16_224 deit_small_patch16_224 gkavision_tiny@compile mambavision_tiny@compile \
  gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile > $J/compare.log 2>&1
echo "compare rc=$? $(date -u +%T)" >> $J/status
timeout 330 python3 benchmarks/profile_step.py --batch 128 --compile default \
  --models gka_tiny_patch16_224 gkavision_tiny mambavision_tiny deit_tiny_patch16_224 \
  --json $J/profile.json > $J/profile.log 2>&1
echo "profile rc=$? $(date -u +%T)" >> $J/status
timeout 200 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py \
  > $J/tests_models.log 2>&1
echo "tests_models rc=$? $(date -u +%T)" >> $J/status
echo "done $(date -u +%T)" >> $J/status
