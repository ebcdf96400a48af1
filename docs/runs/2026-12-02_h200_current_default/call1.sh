# session 2026-12-02 07:00, call 1: the current default's per-launch time split (the backward solve kernel's two
# launches apart) beside lean_solve=1 and num_warps=8; then the core beside the authors' kernels (and fla's port
# where its sources were carried) in one process; the current default's errors at the shapes not measured yet.
# mamba_ssm's selective scan builds in the background for call 2 (benchmarks/build_mamba_selective_scan.py).
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
. scripts/gpu_anchors_env.sh
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
timeout 170 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --profile \
   --shapes 128,197,6,64 128,196,4,40 --variants default lean_solve=1 num_warps=8 \
   --json $OUT/core_split.json > $OUT/core_split.log 2>&1
echo "split rc=$?"; grep -A5 "^Kernel variants" $OUT/core_split.log; grep -A12 "^per-kernel" $OUT/core_split.log
date -u
timeout 270 python3 benchmarks/bench_gka_core.py --no-torch --no-anchor-errors \
   --shapes 128,197,6,64 4,4097,6,64 128,197,3,64 --variants default \
   --json $OUT/core_anchors.json > $OUT/core_anchors.log 2>&1
echo "anchors rc=$?"; grep -E "triton|authors|fla_gka|error" $OUT/core_anchors.log | cut -c1-200
grep -A6 "^| B,T,H,D | ours" $OUT/core_anchors.log
date -u
tail -3 /tmp/mamba_build/build.log; ls /tmp/mamba_build
