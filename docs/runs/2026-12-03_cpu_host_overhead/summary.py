"""Best and median round of each row of host_overhead.py, base vs this (commands.sh)."""
import json
import statistics
import sys

work = sys.argv[1]
rows = {}
for side in ("base", "this"):
    runs = [json.load(open(f"{work}/{side}_{r}.json"))["rows"] for r in range(1, 7)]
    rows[side] = {k: (min(x[k][0] for x in runs), statistics.median(x[k][0] for x in runs)) for k in runs[0]}
print("| call | base best / median us | this best / median us |\n|---|---|---|")
for k in rows["base"]:
    (bb, bm), (tb, tm) = rows["base"][k], rows["this"][k]
    print(f"| {k} | {bb:.1f} / {bm:.1f} | {tb:.1f} / {tm:.1f} |")
