# session 2026-12-03 (evening): the mixers' fused per-token kernels (kernels/mixer_pointwise.py) on the GPU, as
# one background job (started by call1.sh in its own process session; wait.sh follows it and copies /tmp/job):
# their GPU tests, profile_step.py eager with fuse_pointwise on and off, then compare.py's eager target points
# with mamba_ssm's selective scan (built while the rest runs) and the unfused rows beside the fused ones.
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
timeout 150 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_mixer_pointwise_gpu.py \
  > $J/tests_pointwise.log 2>&1
echo "tests_pointwise rc=$? $(date -u +%T)" >> $J/status
for fuse in true false; do
  timeout 150 python3 benchmarks/profile_step.py --batch 128 --models gka_tiny_patch16_224 gkavision_tiny \
    --model-kwargs "{\"gka_tiny_patch16_224\": {\"fuse_pointwise\": $fuse}, \"gkavision_tiny\": {\"fuse_pointwise\": $fuse}}" \
    --json $J/profile_fuse_$fuse.json > $J/profile_fuse_$fuse.log 2>&1
  echo "profile fuse=$fuse rc=$? $(date -u +%T)" >> $J/status
done
wait_mamba_build 300 >> $J/status 2>&1 && echo "mamba_ssm built $(date -u +%T)" >> $J/status
cp /tmp/mamba_build/build.log $J/mamba_build.log 2>/dev/null
timeout 400 python3 benchmarks/compare.py --out $J/compare --time-budget-s 340 --no-plots --warmup 2 \
  --point-time-s 0.75 --no-flops --batch-sizes 128 --res 224 --resolutions 1024 2048 --sweep-batch 16 \
  --memory-res 1024 --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 gkavision_tiny@unfused \
  gka_tiny_patch16_224@unfused > $J/compare.log 2>&1
echo "compare rc=$? $(date -u +%T)" >> $J/status
timeout 200 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE tests/gpu/test_models_gpu.py \
  > $J/tests_models.log 2>&1
echo "tests_models rc=$? $(date -u +%T)" >> $J/status
echo "done $(date -u +%T)" >> $J/status
