"""Median / 90th percentile / max over the seeds of a T = 1 emulation log: python t1_summary.py LOG"""
import sys
rows = {}
for line in open(sys.argv[1]):
    p = [x.strip() for x in line.split('|')]
    if len(p) > 12 and p[2] == '1':
        rows.setdefault(p[4], []).append((float(p[6]), float(p[12])))
for sched, v in rows.items():
    o, g = sorted(a for a, _ in v), sorted(b for _, b in v)
    n = len(o)
    print(f"{sched}: {n} seeds; forward median {o[n // 2]:.1e} p90 {o[int(n * .9)]:.1e} max {o[-1]:.1e}; "
          f"worst gradient median {g[n // 2]:.1e} p90 {g[int(n * .9)]:.1e} max {g[-1]:.1e}")
