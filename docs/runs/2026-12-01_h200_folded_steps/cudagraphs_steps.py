# per-step times of gka_tiny under torch.compile(mode="reduce-overhead") at 1024 px, batch 16 (compare.py's run C5
# measured 51.5 img/s there against 161 in the default mode); logs of why CUDA graphs re-record or are skipped
import sys, time, torch, timm, torch.nn.functional as F
import gka_vision  # noqa: F401
res, batch, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = timm.create_model("gka_tiny_patch16_224", img_size=res).cuda()
model = torch.compile(model, mode=mode)
x = torch.randn(batch, 3, res, res, device="cuda"); y = torch.randint(0, 1000, (batch,), device="cuda")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
times = []
for i in range(14):
    t0 = time.perf_counter()
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward(); opt.step(); torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
print(res, batch, mode, "step s:", " ".join("%.3f" % t for t in times), "peak GB %.2f" % (torch.cuda.max_memory_allocated() / 1e9), flush=True)
from torch._dynamo.utils import counters
print({k: dict(v) for k, v in counters.items() if v}, flush=True)
