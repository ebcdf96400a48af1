# session 2026-12-03 (night), call 2: start job.sh in its own process session (it outlives this call on the warm
# machine), then wait and copy what it has written so far; call 3 is `bash .../wait.sh 585` alone
cd "$(dirname "$0")/../../.."
date -u
rm -rf /tmp/job && mkdir -p /tmp/job
setsid nohup bash docs/runs/2026-12-03_h200_op_profile/job.sh > /tmp/job/job.out 2>&1 < /dev/null &
bash docs/runs/2026-12-03_h200_op_profile/wait.sh 570
