# wait.sh SECONDS: wait up to SECONDS for job.sh to finish, then copy /tmp/job to $OUT as one archive
J=/tmp/job
[ -d $J ] || { echo "no /tmp/job: a fresh machine, the job is gone"; exit 3; }
end=$((SECONDS + ${1:-585}))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $J/status 2>/dev/null; do sleep 5; done
tar -czf $OUT/job.tgz -C $J .
date -u; cat $J/status
tail -4 $J/tests.log 2>/dev/null; grep '^|' $J/ops_2048_ln.log 2>/dev/null
grep "^\[compare\]" $J/compare.log 2>/dev/null | cut -c1-200 | tail -30
