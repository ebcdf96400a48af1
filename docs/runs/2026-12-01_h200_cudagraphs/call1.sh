# session 2026-12-01 evening, call 1: the default timed as one unit beside its pairing variants; then the core
# beside the anchors with errors, default only (the "one run" table)
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
date -u; nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
S="128,197,6,64 4,4097,6,64 128,197,3,64"
timeout 115 python3 benchmarks/bench_gka_core.py --no-torch --no-anchors --no-errors --shapes $S \
   --variants default paired_steps=none paired_steps=both --json $OUT/core_pairing.json > $OUT/core_pairing.log 2>&1
echo "pairing rc=$?"; grep "^|" $OUT/core_pairing.log
date -u
timeout 400 python3 benchmarks/bench_gka_core.py --no-torch --shapes $S --variants default \
   --json $OUT/core_anchors.json > $OUT/core_anchors.log 2>&1; echo "anchors rc=$?"
grep "^|" $OUT/core_anchors.log
date -u
