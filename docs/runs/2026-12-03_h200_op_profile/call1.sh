# session 2026-12-03 (night), call 1: which PyTorch ops run the GPU time outside the scans (profile_step.py --ops):
# gka_tiny and deit_tiny at 2048 px (batch 16, eager), gkavision_tiny and mambavision_tiny (this project's Triton
# selective scan) at 224 px (batch 128, eager); then host_overhead.py on the H200 with the kernels and stubbed
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
date -u
timeout 240 python3 benchmarks/profile_step.py --batch 16 --res 2048 --steps 2 --warmup 2 --ops 45 \
  --models gka_tiny_patch16_224 deit_tiny_patch16_224 --json $OUT/ops_2048.json > $OUT/ops_2048.log 2>&1
echo "ops 2048 rc=$?"; grep '^|' $OUT/ops_2048.log
timeout 150 python3 benchmarks/profile_step.py --batch 128 --steps 3 --warmup 2 --ops 45 \
  --models gkavision_tiny mambavision_tiny --json $OUT/ops_224.json > $OUT/ops_224.log 2>&1
echo "ops 224 rc=$?"; grep '^|' $OUT/ops_224.log
for a in "" "--stub-kernels" "--bidirectional" "--bidirectional --stub-kernels"; do
  timeout 60 python3 benchmarks/host_overhead.py $a >> $OUT/host_overhead.log 2>&1; echo "host_overhead $a rc=$?"
done
tail -40 $OUT/host_overhead.log
date -u
