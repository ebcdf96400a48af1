"""Medians over the rounds in raw/ of the host microseconds per forward + backward (benchmarks/host_overhead.py)."""
import glob
import json
import os
import statistics

here = os.path.dirname(os.path.abspath(__file__))
for mode, pattern in (("one direction", "r?.json"), ("bidirectional", "r?_bi.json")):
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(here, "raw", pattern)))]
    med = {row: statistics.median(r["rows"][row][0] for r in runs) for row in runs[0]["rows"]}
    print(f"{mode}, {len(runs)} rounds, shape {runs[0]['shape']}, torch {runs[0]['torch']}, {runs[0]['date']}:")
    for row in ("scan fwd+bwd", "op fwd+bwd", "function fwd+bwd"):
        print(f"  {row:18s} {med[row]:7.1f} us")
    print(f"  the eager call saves {med['op fwd+bwd'] - med['scan fwd+bwd']:.1f} us a call "
          f"({1 - med['scan fwd+bwd'] / med['op fwd+bwd']:.0%})")
