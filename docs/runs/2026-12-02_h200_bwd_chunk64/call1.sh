# session 2026-12-02 04:00, call 1: the backward on 64-token chunks (split in two launches, its steps paired and
# folded too) and the candidate shorter bf16 schedule, timed beside the default in one process; their errors
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
S="128,197,6,64 4,4097,6,64 128,197,3,64 128,196,4,40 128,49,8,40"
C64="chunk=64,split_backward=1"
SHORT="schedule=bf16:12+2xbf16:12/bf16:10+2xbf16:12"
V="default $C64 $C64,paired_steps=both,folded_steps=both $SHORT $C64,paired_steps=both,folded_steps=both,$SHORT"
timeout 330 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --profile --shapes $S \
   --variants $V --json $OUT/core_c64.json > $OUT/core_c64.log 2>&1
echo "timing rc=$?"; grep -A12 "^Kernel variants" $OUT/core_c64.log
date -u
timeout 180 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --shapes 128,197,6,64 128,196,4,40 \
   --variants $V --json $OUT/core_c64_err.json > $OUT/core_c64_err.log 2>&1
echo "errors rc=$?"; grep -i -A14 "error" $OUT/core_c64_err.log | head -60
date -u
