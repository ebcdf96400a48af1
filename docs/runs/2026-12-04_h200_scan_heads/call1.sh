# call 1: start job.sh in its own process session, then wait up to 570 s and copy what it has written
cd "$(dirname "$0")/../../.."
mkdir -p /tmp/job
setsid nohup bash docs/runs/2026-12-04_h200_scan_heads/job.sh > /tmp/job/job.out 2>&1 < /dev/null &
bash docs/runs/2026-12-04_h200_scan_heads/wait.sh 570
