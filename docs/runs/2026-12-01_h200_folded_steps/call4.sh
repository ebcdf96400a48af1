# call 4: why gka_tiny under CUDA graphs is slow at 1024 px (per-step times, perf hints)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
. scripts/device_env.sh
use_repo_imports
date -u
TORCH_LOGS="perf_hints" timeout 170 python3 docs/runs/2026-12-01_h200_folded_steps/cudagraphs_steps.py 1024 16 reduce-overhead > $OUT/cg_1024.log 2>&1; echo "rc=$?"
grep -v "^ " $OUT/cg_1024.log | grep -iE "step s|skipping|cudagraph|re-record|counters|\{" | cut -c1-400 | head -30
date -u
timeout 120 python3 docs/runs/2026-12-01_h200_folded_steps/cudagraphs_steps.py 1024 16 default > $OUT/cg_1024_default.log 2>&1; echo "rc=$?"
grep "step s" $OUT/cg_1024_default.log
date -u
