#!/usr/bin/env bash
# One GPU: the CUDA tests of the selective scan and the Mamba / GKAVision models, then benchmarks/compare.py
# within a wall-clock budget, on issue 11's models (MODELS below; a --models in the extra args replaces them).
# For the device tool:
#   run(kind="nvidia-h200", carry=[".whl"], command="bash scripts/gpu_compare.sh")
# (CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_compare.sh to use the second GPU; it is honoured throughout.)
# With GKA_ANCHOR_MAMBA_BUILD set (the folder of mamba_ssm's built extension selective_scan_cuda, see
# scripts/gpu_anchors_env.sh), that folder goes on PYTHONPATH, so that the Mamba baselines run with mamba_ssm's
# CUDA scan; a build still running there is waited for, at most MAMBA_WAIT_S (default 60) s, after the tests.
# Writes at most 4 files to $OUT/compare: compare.md, compare.json, compare.log (tests + benchmark output),
# compare_plots.tar (throughput and memory vs resolution PNGs).
# TOTAL_S (default 420) bounds the whole script; TESTS_S (default 110) the tests. Extra args go to compare.py
# (e.g. --first-step-limit-s: a compilation stopped after that long, default 120 s).
set -o pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
TOTAL_S=${TOTAL_S:-420}
TESTS_S=${TESTS_S:-110}
MAMBA_WAIT_S=${MAMBA_WAIT_S:-60}
MODELS=(gka_tiny_patch16_224 gka_tiny_patch16_224@compile deit_tiny_patch16_224 deit_tiny_patch16_224@compile
        gkavision_tiny gkavision_tiny@compile mambavision_tiny mambavision_tiny@compile
        gka_small_patch16_224 mamba_vim_small_patch16_224 deit_small_patch16_224 mambaout_femto)
DEST=${OUT:-output}/compare
SITE=${SITE:-/tmp/site}
WORK=$(mktemp -d)
mkdir -p "$DEST"
LOG="$DEST/compare.log"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. scripts/device_env.sh
# fvcore for the GMACs
install_carried_wheels "$SITE" >>"$LOG" 2>&1 || echo "wheel install failed (GMACs may be missing)" | tee -a "$LOG"
use_repo_imports "$SITE"
[ -n "${GKA_ANCHOR_MAMBA_BUILD:-}" ] && export PYTHONPATH="$GKA_ANCHOR_MAMBA_BUILD:$PYTHONPATH"
{
    echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
    nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv 2>&1
    python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__, 'gpu', torch.cuda.get_device_name())"
} >>"$LOG" 2>&1
# 1) CUDA tests (Triton selective scan fwd+bwd vs the PyTorch scan; models with the auto backend)
echo "== CUDA tests (timeout ${TESTS_S}s)" >>"$LOG"
timeout -k 5 "$TESTS_S" python3 -m pytest tests/gpu/test_selective_scan_gpu.py \
    tests/gpu/test_models_gpu.py -v -p no:cacheprovider -o addopts="" \
    >"$WORK/tests.log" 2>&1
tests_rc=$?
cat "$WORK/tests.log" >>"$LOG"
echo "== CUDA tests rc=$tests_rc" >>"$LOG"
if [ -n "${GKA_ANCHOR_MAMBA_BUILD:-}" ]; then
    pid=$(cat "$GKA_ANCHOR_MAMBA_BUILD/pid" 2>/dev/null)
    t_wait=$(date +%s)
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - t_wait )) -lt "$MAMBA_WAIT_S" ]; do
        sleep 2
    done
    ls "$GKA_ANCHOR_MAMBA_BUILD"/selective_scan_cuda*.so >>"$LOG" 2>&1 || echo "== no selective_scan_cuda*.so in" \
        "$GKA_ANCHOR_MAMBA_BUILD: the Mamba baselines use this project's scans" >>"$LOG"
fi
# compare.py's own test: does gka_vision.ops.selective_scan offer mamba_ssm's CUDA scan (the baselines' default)?
mamba_ssm_ready() {
    python3 -c "import sys, torch; sys.path.insert(0, 'benchmarks'); import compare
sys.exit('mamba_ssm' not in compare.scan_backends(torch.device('cuda')))" 2>>"$LOG"
}
extra=()
if grep -q "test_selective_scan_gpu.py::test_cuda_triton.*FAILED\|test_selective_scan_gpu.py::test_cuda_triton.*ERROR" "$WORK/tests.log" \
    || { [ "$tests_rc" -ne 0 ] && ! grep -q "test_selective_scan_gpu.py::test_cuda_triton.*PASSED" "$WORK/tests.log"; }; then
    if mamba_ssm_ready; then
        echo "== the Triton selective scan did not pass its CUDA test; the Mamba baselines use mamba_ssm's scan" >>"$LOG"
    else
        echo "== the Triton selective scan did not pass its CUDA test: Mamba baselines use the PyTorch scan" >>"$LOG"
        extra+=(--mamba-backend torch)
    fi
fi
# 2) the comparison, within what is left (20 s kept for rendering and packing)
left=$(( TOTAL_S - ($(date +%s) - t_start) - 20 ))
budget=$(( left - 45 ))   # imports, CUDA init and the last point overrun the budget; the hard timeout is `left`
[ "$budget" -lt 20 ] && budget=20 && left=60
echo "== compare.py: time budget ${budget}s, hard timeout ${left}s" >>"$LOG"
timeout -k 5 "$left" python3 benchmarks/compare.py --out "$WORK" --time-budget-s "$budget" --no-plots \
    --warmup 2 --point-time-s 0.75 --models "${MODELS[@]}" "${extra[@]}" "$@" >>"$LOG" 2>&1
cmp_rc=$?
echo "== compare.py rc=$cmp_rc" >>"$LOG"
# tables and plots from the json (also after a kill: the json is rewritten after every point)
if [ -f "$WORK/compare.json" ]; then
    timeout 60 python3 benchmarks/compare.py --render --out "$WORK" >>"$LOG" 2>&1
    cp "$WORK/compare.json" "$WORK/compare.md" "$DEST/" 2>>"$LOG"
    (cd "$WORK" && tar cf "$DEST/compare_plots.tar" compare_*_vs_resolution.png) 2>>"$LOG"
fi
echo "== total $(( $(date +%s) - t_start ))s, tests rc=$tests_rc, compare rc=$cmp_rc" >>"$LOG"
tail -n 40 "$LOG"
exit $cmp_rc
