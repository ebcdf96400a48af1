# session 2026-12-03, call 1: the host side of the compiled hierarchical pair on the current code: profile_step.py
# --host (phases, top self-time host events, the calls per step that make the host wait), and the code Inductor
# generated for both models (TORCH_LOGS=output_code, gzipped). mambavision_tiny runs this project's Triton selective
# scan here (mamba_ssm's is not built in this call): its compiled graphs around the scan are the same.
set -o pipefail
cd "$(dirname "$0")/../../.."
. scripts/device_env.sh && device_call_setup /tmp/site || exit 1
export PYTHONPATH="$PYTHONPATH:$PWD/tests"
date -u
TORCH_LOGS=output_code timeout 330 python3 benchmarks/profile_step.py --batch 128 --no-eager --compile default --host \
  --steps 3 --models gkavision_tiny mambavision_tiny --json $OUT/profile_host.json > $OUT/profile_host.log \
  2> $OUT/output_code.log
echo "profile rc=$?"
gzip -9 $OUT/output_code.log
grep -v '^{' $OUT/profile_host.log | cut -c1-200 | head -70
date -u
