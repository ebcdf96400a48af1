# session 2026-12-03 03:30, call 1: where the eager cost of selective recomputation goes at 1024 px (batch 16):
# torch.profiler of a gka_tiny training step with it (the default) and without, host side included
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
P="python3 benchmarks/profile_step.py --models gka_tiny_patch16_224 --batch 16 --res 1024 --steps 3 --warmup 2 --host"
timeout 150 $P --json $OUT/selective.json > $OUT/selective.log 2>&1; echo "selective rc=$?"
timeout 150 $P --json $OUT/noselective.json --model-kwargs '{"gka_tiny_patch16_224": {"selective_recompute": false}}' \
  > $OUT/noselective.log 2>&1; echo "noselective rc=$?"
for f in selective noselective; do echo "== $f"; head -c 5000 $OUT/$f.log; done
date -u
