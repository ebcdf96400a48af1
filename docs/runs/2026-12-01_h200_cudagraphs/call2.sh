# call 2: the core beside the anchors, timings only (errors of ours and the authors' at the first shape: call 1)
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
date -u
S="128,197,6,64 4,4097,6,64 128,197,3,64"
timeout 450 python3 benchmarks/bench_gka_core.py --no-torch --no-errors --shapes $S --variants default \
   --json $OUT/core_anchors.json > $OUT/core_anchors.log 2>&1; echo "anchors rc=$?"
grep "^|" $OUT/core_anchors.log
date -u
ls /tmp/mamba_build/*.so
