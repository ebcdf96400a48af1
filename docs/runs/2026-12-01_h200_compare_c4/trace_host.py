"""Python-level host trace of one compiled training step: self time by Python function inside the backward's
compiled graph call (and the forward's), for the models given."""
import gzip, json, os, sys, time
from collections import defaultdict
import torch, timm
sys.path.insert(0, os.getcwd())
import gka_vision  # noqa
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
from profile_step import train_step_fn
from torch.profiler import profile, ProfilerActivity

out = os.environ["OUT"]
for name in sys.argv[1:]:
    torch.manual_seed(0)
    model = torch.compile(timm.create_model(name).cuda().train())
    step = train_step_fn(model, 128, 224, torch.device("cuda"), torch.bfloat16)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        step(); torch.cuda.synchronize()
    path = f"{out}/trace_{name}.json"
    prof.export_chrome_trace(path)
    ev = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    by_tid = defaultdict(list)
    for e in ev:
        by_tid[e["tid"]].append(e)
    for tid, es in by_tid.items():
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
    calls = [e for e in ev if e["name"].startswith("## Call CompiledFxGraph")]
    for call in sorted(calls, key=lambda e: -e["dur"]):
        t0, t1 = call["ts"], call["ts"] + call["dur"]
        inside = [e for e in by_tid[call["tid"]] if t0 <= e["ts"] and e["ts"] + e["dur"] <= t1 and e is not call]
        # self time: duration minus the durations of direct children (events nest per thread)
        selft, tot, cnt = defaultdict(float), defaultdict(float), defaultdict(int)
        stack = []
        for e in inside:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                selft[stack[-1]["name"]] -= e["dur"]
            selft[e["name"]] += e["dur"]; tot[e["name"]] += e["dur"]; cnt[e["name"]] += 1
            stack.append(e)
        print(f"\n{name}: {call['name'][:60]} {call['dur']/1e3:.2f} ms, {len(inside)} events inside")
        print("  top self ms (calls, total ms):")
        for n, s in sorted(selft.items(), key=lambda kv: -kv[1])[:30]:
            print(f"  {s/1e3:8.3f} ({cnt[n]:5d}, {tot[n]/1e3:8.3f})  {n[:110]}")
    with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
        g.write(f.read())
    os.remove(path)
    torch._dynamo.reset()
