# session 2026-12-04 (evening): one background job on one machine (started by call1.sh in its own process session;
# call2.sh and call3.sh wait for it and copy /tmp/job): GPU tests while mamba_ssm's selective scan builds; the
# eager scan call's host time with real launches; interleaved A/B rounds of gkavision_tiny with power-of-two scan
# heads (32, the new default) against head dim 40 (@hd40) and mambavision_tiny; the Fashion-MNIST study of the pair
# with the new heads; compare.py's target points; the core with the authors' kernels beside it.
set -o pipefail
cd "$(dirname "$0")/../../.."
J=/tmp/job
mkdir -p $J
. scripts/device_env.sh && device_call_setup /tmp/site || { echo "setup failed" >> $J/status; exit 1; }
MAX_JOBS=10 . scripts/gpu_anchors_env.sh 2> $J/anchors_env.log
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD:$PWD/tests" PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  } > $J/env.log 2>&1
st() { echo "$1 $(date -u +%T)" >> $J/status; }
st start
timeout 200 python3 -m pytest -v -p no:cacheprovider -o addopts= -rfE \
  tests/gpu/test_gka_triton_gpu.py::test_eager_calls_equal_the_custom_op tests/gpu/test_models_gpu.py \
  "tests/gpu/test_layer_norm_gpu.py::test_cuda_models_with_the_kernel_match_pytorch_layer_norm[gkavision_tiny]" \
  > $J/tests.log 2>&1
st "tests rc=$?"
wait_mamba_build 200 >> $J/status 2>&1 && st "mamba_ssm built"
cp /tmp/mamba_build/build.log $J/mamba_build.log 2>/dev/null
for a in "" "--bidirectional"; do
  timeout 40 python3 benchmarks/host_overhead.py --iters 300 $a --json $J/host${a:+_bi}.json >> $J/host.log 2>&1
  st "host$a rc=$?"
done
timeout 170 python3 benchmarks/ab_train.py --batch 128 --res 224 --rounds 5 --steps 8 --warmup 3 \
  --models gkavision_tiny gkavision_tiny@hd40 mambavision_tiny --json $J/ab_224.json > $J/ab_224.log 2>&1
st "ab_224 rc=$?"
OUT=$J/study STUDY_GPUS=1 STUDY_MODELS="gkavision_tiny mambavision_tiny" STUDY_DEADLINE_S=450 EPOCHS=4 \
  FMNIST_SRC=.device/fashion-mnist SITE=/tmp/site bash scripts/gpu_fmnist_study.sh > $J/study_stdout.log 2>&1
st "study rc=$?"
timeout 420 python3 benchmarks/compare.py --out $J/compare --time-budget-s 380 --no-plots --warmup 2 \
  --point-time-s 1.0 --no-flops --batch-sizes 128 --res 224 --resolutions 1024 2048 --sweep-batch 16 \
  --memory-res 1024 --first-step-limit-s 150 \
  --models gkavision_tiny mambavision_tiny gka_tiny_patch16_224 deit_tiny_patch16_224 gkavision_tiny@compile \
  mambavision_tiny@compile gka_tiny_patch16_224@compile deit_tiny_patch16_224@compile > $J/compare.log 2>&1
st "compare rc=$?"
timeout 150 python3 benchmarks/bench_gka_core.py --no-torch --no-anchor-errors \
  --shapes 128,197,6,64 4,4097,6,64 128,196,5,32 --variants default --json $J/core.json > $J/core.log 2>&1
st "core rc=$?"
st done
