set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
date -u
. scripts/device_env.sh
install_carried_wheels /tmp/site > $OUT/wheels.log 2>&1
use_repo_imports /tmp/site
. scripts/gpu_anchors_env.sh
export PYTHONPATH="$PYTHONPATH:$GKA_ANCHOR_MAMBA_BUILD"
timeout 60 python3 -m pytest tests/gpu/test_compile_gpu.py -x -p no:cacheprovider -o addopts="" -k "opcheck_selective" 2>&1 | tail -60 | cut -c1-300
date -u
timeout 250 python3 .device/trace_host.py gkavision_tiny mambavision_tiny 2>&1 | grep -v Warn | tee $OUT/trace.log
date -u
