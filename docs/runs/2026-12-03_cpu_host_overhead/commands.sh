# 2026-12-03 13:41 UTC, a 2-core CPU VM (torch 2.14.1, Triton 3.8.0), kernel launches stubbed: benchmarks/host_overhead.py
# on commit 20f8330 (its kernels/ calling triton.cdiv / triton.next_power_of_2 from the host code; "base") and on the
# tree with kernels/host_math.py ("this"), six interleaved rounds; the summary takes the best and the median round.
# Run from the repository root; $WORK is a scratch folder, .venv the repository's environment.
set -e
WORK=${WORK:-/tmp/host_overhead_ab}
rm -rf $WORK && mkdir -p $WORK/base $WORK/link
git archive 20f8330 | tar x -C $WORK/base
cp benchmarks/host_overhead.py $WORK/base/benchmarks/
ln -s $WORK/base/kernels $WORK/link/gka_kernels
for r in 1 2 3 4 5 6; do
  (cd $WORK/base && PYTHONPATH=$WORK/link:$WORK/base $OLDPWD/.venv/bin/python benchmarks/host_overhead.py --device cpu \
     --iters 1500 --json $WORK/base_$r.json > /dev/null)
  .venv/bin/python benchmarks/host_overhead.py --device cpu --iters 1500 --json $WORK/this_$r.json > /dev/null
done
python3 docs/runs/2026-12-03_cpu_host_overhead/summary.py $WORK
