"""Same-process A/B: the committed kernels (HEAD, as gka_kernels_old) against the working tree's (gka_kernels),
bidirectional fwd and fwd+bwd, interleaved rounds; plus the fp32-q/k-with-bf16-v case of gka_tiny."""
import sys, os, json
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks")); sys.path.insert(0, "/tmp/oldk")
import torch
import bench_gka_core as bc
import gka_kernels as new
import gka_kernels_old as old
res = {}
for shape in [(128, 197, 6, 64), (4, 4097, 6, 64), (128, 197, 3, 64), (128, 196, 4, 40)]:
    for case in ("bf16", "fp32qk"):
        if case == "fp32qk" and shape[3] != 64:
            continue
        ins = bc.make_inputs(*shape, torch.bfloat16)
        if case == "fp32qk":
            ins = [t.detach().float().requires_grad_() if i < 2 else t for i, t in enumerate(ins)]
        do = torch.randn(shape, device="cuda", dtype=ins[0].dtype)  # the output has q's dtype
        outs = {}
        for name, mod in (("old", old), ("new", new)):
            o = mod.gka_scan_bidirectional_triton(*ins)
            o.backward(do)
            outs[name] = [o.detach().float()] + [t.grad.float().clone() for t in ins]
            for t in ins: t.grad = None
        same = all(torch.equal(a, b) for a, b in zip(outs["old"], outs["new"]))
        t = {"old": [], "new": []}
        for _ in range(3):
            for name, mod in (("old", old), ("new", new)):
                f, fb, _ = bc.time_op(lambda *a: mod.gka_scan_bidirectional_triton(*a), ins, do)
                t[name].append((f, fb))
        med = {n: [sorted(x[i] for x in v)[1] for i in (0, 1)] for n, v in t.items()}
        key = f"{shape} {case}"
        res[key] = dict(med, identical=same)
        print(f"{key}: old fwd {med['old'][0]:.3f} fwd+bwd {med['old'][1]:.3f} | new fwd {med['new'][0]:.3f} "
              f"fwd+bwd {med['new'][1]:.3f} | new/old fwd+bwd {med['new'][1] / med['old'][1]:.3f} | outputs+grads identical: {same}", flush=True)
json.dump(res, open(os.environ["OUT"] + "/ab.json", "w"), indent=1)
