# wait.sh SECONDS: wait for job.sh's "done" (at most SECONDS), copy /tmp/job to $OUT, print the status and tails
T=${1:-570}
for i in $(seq 1 $T); do grep -q "^done" /tmp/job/status 2>/dev/null && break; sleep 1; done
cp -r /tmp/job/. $OUT/ 2>/dev/null
rm -rf $OUT/study/study_runs.tar.gz.part 2>/dev/null
cat /tmp/job/status
tail -3 /tmp/job/tests.log 2>/dev/null; grep -v Warning /tmp/job/ab_224.log 2>/dev/null | tail -6
tail -5 /tmp/job/study/study.log 2>/dev/null; tail -4 /tmp/job/compare.log 2>/dev/null; tail -8 /tmp/job/core.log 2>/dev/null
