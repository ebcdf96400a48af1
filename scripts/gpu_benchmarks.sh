#!/usr/bin/env bash
# The GPU measurements of the GKA core and the models, for the device tool (carry .whl and .anchors):
#   run(carry=[".whl", ".anchors"], command="bash scripts/gpu_benchmarks.sh tests core profile")
#   run(carry=[".whl", ".anchors"], command="bash scripts/gpu_benchmarks.sh compare")   # the next call, at once
# (carry both in every call: an ignored folder that a call does not carry is gone on the device)
# Stages, in the order given:
#   tests    tests/gpu (kernel correctness vs the float64 reference, compile of every model with the Triton backend)
#   core     benchmarks/bench_gka_core.py with the anchors (the paper authors' kernels, fla's GKA port); the last shape is gkavision_tiny's stage 3
#   profile  benchmarks/profile_step.py: a training step's GPU time in the scans and elsewhere, eager and compiled
#   compare  scripts/gpu_compare.sh (benchmarks/compare.py, Mamba baselines on mamba_ssm's CUDA scan)
#   study    scripts/gpu_fmnist_study.sh (Fashion-MNIST accuracy study; STUDY_* variables apply)
# Env: <STAGE>_S bounds a stage in seconds; CORE_ARGS / PROFILE_ARGS add arguments. Logs and JSON go to $OUT.
# The first call starts the build of mamba_ssm's selective scan in the background (scripts/gpu_anchors_env.sh);
# `compare` waits for it.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
SITE=${SITE:-/tmp/site}
. scripts/device_env.sh
[ -d "$SITE/fvcore" ] || install_carried_wheels "$SITE" || echo "gpu_benchmarks: wheel install failed" >&2
use_repo_imports "$SITE"
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
nvidia-smi --query-gpu=name,clocks.sm,memory.used,memory.total --format=csv,noheader
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
rc=0
for stage in "$@"; do
    echo "== $stage ($(date -u +%H:%M:%S))"
    case $stage in
        tests)
            # the kernel and model tests first, the compile tests (Inductor, ~30 s a model) last
            timeout "${TESTS_S:-600}" python3 -m pytest tests/gpu/test_gka_triton_gpu.py tests/gpu/test_selective_scan_gpu.py \
                tests/gpu/test_models_gpu.py tests/gpu/test_mixer_pointwise_gpu.py tests/gpu/test_layer_norm_gpu.py tests/gpu/test_compile_gpu.py -v -p no:cacheprovider -o addopts="" -rfE 2>&1 \
                | tee "$OUT/tests.log" | grep -E "passed|failed|error|FAILED|ERROR" | tail -n 80 ;;
        core)
            # shellcheck disable=SC2086
            timeout "${CORE_S:-300}" python3 benchmarks/bench_gka_core.py --no-torch --profile \
                --shapes 128,197,6,64 4,4097,6,64 128,197,3,64 128,196,5,32 --json "$OUT/core.json" ${CORE_ARGS:-} 2>&1 \
                | tee "$OUT/core.log" | grep -v "^\[" | grep -E "^\||^$|per-kernel|^ +[0-9]" ;;
        profile)
            # shellcheck disable=SC2086
            timeout "${PROFILE_S:-300}" python3 benchmarks/profile_step.py --batch 128 --compile default \
                --models gka_tiny_patch16_224 deit_tiny_patch16_224 gkavision_tiny mambavision_tiny \
                --json "$OUT/profile.json" ${PROFILE_ARGS:-} 2>&1 | tee "$OUT/profile.log" | grep -E "^\||top_other" ;;
        compare)
            wait_mamba_build "${MAMBA_WAIT_S:-240}" || echo "mamba_ssm's scan not built: the baselines use our scans"
            OUT="$OUT" TOTAL_S="${COMPARE_S:-500}" bash scripts/gpu_compare.sh ;;
        study)
            OUT="$OUT" bash scripts/gpu_fmnist_study.sh ;;
        *)
            echo "gpu_benchmarks: unknown stage $stage (tests, core, profile, compare, study)" >&2; exit 2 ;;
    esac
    [ $? -eq 0 ] || rc=1
done
exit $rc
