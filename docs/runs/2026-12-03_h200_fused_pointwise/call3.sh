# session 2026-12-03 (evening), call 3: start job3.sh in its own process session (it outlives this call on the warm
# machine), then wait and copy what it has written so far
cd "$(dirname "$0")/../../.."
date -u
rm -rf /tmp/job && mkdir -p /tmp/job
setsid nohup bash docs/runs/2026-12-03_h200_fused_pointwise/job3.sh > /tmp/job/job.out 2>&1 < /dev/null &
bash docs/runs/2026-12-03_h200_fused_pointwise/wait.sh 575
