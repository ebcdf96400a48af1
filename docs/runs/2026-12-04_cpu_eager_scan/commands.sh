# 2026-12-04, a 2-core CPU VM: the eager scan call (ops/gka_scan.py _EagerScan) against the custom op through its
# registered autograd, in one process per round (benchmarks/host_overhead.py: kernel launches stubbed on a CPU),
# six rounds of each direction mode alternating; summary.py prints the medians
cd "$(dirname "$0")/../../.."
for r in 1 2 3 4 5 6; do
  for a in "" "--bidirectional"; do
    .venv/bin/python benchmarks/host_overhead.py --device cpu --iters 300 $a --json "$(dirname "$0")/raw/r${r}${a:+_bi}.json" > /dev/null
  done
done
.venv/bin/python "$(dirname "$0")/summary.py"
