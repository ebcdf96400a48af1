# session 2026-12-02 15:40, call 2: the core on this checkout's default beside the paper authors' kernels in one
# process at (128, 197, 6, 64), the whole call left to the authors' compilation and autotuning (fla's port is
# not carried: its forward target was met in earlier runs)
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
. scripts/gpu_anchors_env.sh
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
timeout 560 python3 benchmarks/bench_gka_core.py --no-torch --no-anchor-errors --shapes 128,197,6,64 \
   --variants default --json $OUT/core_anchors.json > $OUT/core_anchors.log 2>&1
echo "anchors rc=$?"; grep -E "triton|authors|fla_gka|error" $OUT/core_anchors.log | cut -c1-220
grep -A6 "^| B,T,H,D | ours" $OUT/core_anchors.log
date -u
