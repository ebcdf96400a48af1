# wait.sh SECONDS: wait up to SECONDS for job.sh to finish, then copy /tmp/job to $OUT as one archive (calls 2 and
# later run `bash docs/runs/2026-12-03_h200_fused_pointwise/wait.sh 585` alone)
J=/tmp/job
[ -d $J ] || { echo "no /tmp/job: a fresh machine, the job is gone"; exit 3; }
end=$((SECONDS + ${1:-585}))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $J/status 2>/dev/null; do sleep 5; done
tar -czf $OUT/job.tgz -C $J .
date -u; cat $J/status
tail -5 $J/tests_pointwise.log $J/tests3.log 2>/dev/null; cat $J/ab_conv_layout.log 2>/dev/null
for f in $J/profile_fuse_*.log; do grep '^|' $f 2>/dev/null; done
grep "^\[compare\]" $J/compare*.log 2>/dev/null | cut -c1-200 | tail -30
