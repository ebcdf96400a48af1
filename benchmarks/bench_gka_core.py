"""Benchmark of the GKA core, both scan directions: Triton backend vs torch backend vs SDPA (one GPU, one run).

    python benchmarks/bench_gka_core.py [--shapes 128,197,6,64 ...] [--variants tf32:64:4 ...] [--json out.json]

For every (B, T, H, D): median ms (triton.testing.do_bench) of the forward and forward+backward of
gka_scan_bidirectional with backend="triton" (each kernel variant PREC:CHUNK:WARPS), of the same op with
backend="torch", and of F.scaled_dot_product_attention (non-causal, [B, H, T, D]); peak memory of one
forward+backward; relative error vs the float64 reference (exact solve) on a slice (first batch element,
first 2 heads, at most 1025 tokens), for bf16 and fp32 inputs. Also prints the per-kernel time split
of one forward+backward from torch.profiler and the FLOPs the kernels execute.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gka_kernels.gka_function as gkf  # noqa: E402
from gka_vision.ops import gka_scan_bidirectional  # noqa: E402
from gka_vision.ops.gka_reference import gka_scan_reference  # noqa: E402

DEFAULT_SHAPES = ["128,197,6,64", "64,577,6,64", "16,1025,6,64", "4,4097,6,64"]


def make_inputs(B, T, H, D, dtype, seed=0, requires_grad=True):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    u = lambda *s: torch.rand(*s, device="cuda", generator=gen)  # noqa: E731
    beta = torch.sigmoid(r(B, T, H, 1))
    q = F.normalize(r(B, T, H, D), dim=-1)
    k = F.normalize(r(B, T, H, D), dim=-1) * beta
    v = r(B, T, H, D) * beta
    alpha = torch.sigmoid(r(B, T, H))
    # g = -exp(A_log) softplus(w.x + dt_bias) with A_log = log U(1,16), dt ~ logU(1e-3, 1e-1) (GKA.md sec. 1)
    A = torch.empty(H, device="cuda").uniform_(1, 16, generator=gen)
    dt = torch.exp(torch.empty(B, T, H, device="cuda").uniform_(-6.9, -2.3, generator=gen))
    g = -A * dt
    g_rev = -A * torch.exp(u(B, T, H) * 4.6 - 6.9)
    ins = [t.to(dtype) for t in (q, k, v, alpha)] + [g, g_rev]
    return [t.requires_grad_(requires_grad) for t in ins]


def rel(x, y):
    return ((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-30)).item()


def set_variant(variant):
    """PREC:CHUNK:WARPS[:PREC_HI]; CHUNK or WARPS 0 = the per-head-dim default of gka_kernels."""
    prec, chunk, warps, *hi = variant.split(":")
    gkf.DOT_PRECISION, gkf.CHUNK_SIZE, gkf.NUM_WARPS = prec, int(chunk) or None, int(warps) or None
    gkf.DOT_PRECISION_HI = hi[0] if hi else "tf32x3"


def time_op(fn, ins, do):
    """(fwd ms, fwd+bwd ms, peak MiB of one fwd+bwd above the inputs)."""
    with torch.no_grad():
        t_f = do_bench(lambda: fn(*ins))

    def step():
        fn(*ins).backward(do)

    t_fb = do_bench(step, grad_to_none=ins)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    for t in ins:
        t.grad = None
    return t_f, t_fb, peak


def gka_op(backend):
    return lambda q, k, v, a, g, g2: gka_scan_bidirectional(q, k, v, a, g, g2, backend=backend)


def sdpa_op(q, k, v, *_):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def errors(B, T, H, D, dtype):
    """Forward and worst gradient rel. error of the triton op vs the float64 reference on a slice."""
    ins = make_inputs(B, T, H, D, dtype, seed=1)
    sl = [t.detach()[:1, :min(T, 1025), :2].contiguous().requires_grad_() for t in ins]
    o = gka_scan_bidirectional(*sl, backend="triton")
    d = [t.double() for t in sl]
    ref = 0.5 * (gka_scan_reference(*d[:5]) + gka_scan_reference(*d[:4], d[5], reverse=True))
    do = torch.randn(o.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    grads = torch.autograd.grad(o, sl, do.to(o.dtype))
    grads_ref = torch.autograd.grad(ref, sl, do.double())
    gerr = {n: rel(x, y) for n, x, y in zip(["q", "k", "v", "alpha", "g", "g_rev"], grads, grads_ref)}
    return rel(o, ref), gerr


def kernel_flops(B, T, H, D, ndir=2):
    """FLOPs (2 per multiply-add) the four kernels execute with the current config, padded chunks included.

    tf32x3 dots count once (their 3 tensor-core products are not counted).
    """
    BD, C, _, _, _ = gkf._config(D)
    f1, f2 = gkf._iters(30, False)
    b1, b2 = gkf._iters(30, True)
    n = B * H * triton.cdiv(T, C) * C * ndir        # padded tokens over both directions
    it = 2 * BD * BD + 4 * C * BD                    # one application of A per token
    fwd = (f1 + f2 + 1) * it + 4 * BD * BD + 2 * C * C + 8 * C * BD + 4 * BD * BD
    bwd = (b1 + b2 + 1) * it + 14 * BD * BD + 4 * C * C + 20 * C * BD + 6 * BD * BD
    return n * fwd, n * bwd


def profile_split(ins, do):
    from torch.profiler import ProfilerActivity, profile
    fn = gka_op("triton")
    for _ in range(2):
        fn(*ins).backward(do)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn(*ins).backward(do)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = e.cuda_time_total
        if t > 0:
            rows.append((t / 5 / 1000, e.key))
    for t in ins:
        t.grad = None
    return sorted(rows, reverse=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="B,T,H,D")
    p.add_argument("--variants", nargs="*", default=["tf32:0:0"],
                   help="triton PREC:CHUNK:WARPS[:PREC_HI] (0 = default per head dim); the first one is used for errors")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--no-torch", action="store_true", help="skip the torch backend")
    p.add_argument("--no-errors", action="store_true")
    p.add_argument("--profile", action="store_true", help="per-kernel time split at the first shape")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    info = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), dtype=args.dtype,
                command="python " + " ".join(sys.argv))
    print(json.dumps(info))
    results = []
    for shape in args.shapes:
        B, T, H, D = (int(s) for s in shape.split(","))
        ins = make_inputs(B, T, H, D, dtype)
        do = torch.randn(B, T, H, D, device="cuda", dtype=dtype)
        row = dict(shape=[B, T, H, D], triton={})
        for variant in args.variants:
            set_variant(variant)
            try:
                row["triton"][variant] = time_op(gka_op("triton"), ins, do)
            except Exception as e:  # a config that does not compile on this GPU: report, go on
                print(shape, "triton", variant, "FAILED:", type(e).__name__, str(e)[:200], flush=True)
                row["triton"][variant] = (float("nan"),) * 3
            nf, nb = kernel_flops(B, T, H, D)
            row["triton"][variant] += ((nf + nb) / row["triton"][variant][1] / 1e9,)  # TFLOP/s fwd+bwd
            print(shape, "triton", variant, ["%.3f" % x for x in row["triton"][variant]], flush=True)
        set_variant(args.variants[0])
        if not args.no_torch:
            row["torch"] = time_op(gka_op("torch"), ins, do)
            print(shape, "torch", ["%.3f" % x for x in row["torch"]], flush=True)
        row["sdpa"] = time_op(sdpa_op, ins, do)
        print(shape, "sdpa", ["%.3f" % x for x in row["sdpa"]], flush=True)
        if not args.no_errors:
            for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                ef, eg = errors(B, T, H, D, dt)
                row[f"err_{name}"] = dict(fwd=ef, grad=eg)
                print(shape, "error", name, "fwd %.2e" % ef, " ".join(f"d{n} {e:.2e}" for n, e in eg.items()),
                      flush=True)
        nf, nb = kernel_flops(B, T, H, D)
        row["gflop_fwd"], row["gflop_bwd"] = nf / 1e9, nb / 1e9
        results.append(row)
        del ins, do
        torch.cuda.empty_cache()

    print("\n| B,T,H,D | triton fwd | triton fwd+bwd | torch fwd | torch fwd+bwd | SDPA fwd | SDPA fwd+bwd "
          "| peak MiB triton / torch | fwd+bwd us per 1k tok | err fwd bf16 / fp32 | max grad err bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        B, T, H, D = row["shape"]
        tf, tfb, tpk, _ = row["triton"][args.variants[0]]
        cf, cfb, cpk = row.get("torch", (float("nan"),) * 3)
        sf, sfb, _ = row["sdpa"]
        e = lambda k: (f"{row[k]['fwd']:.1e}", f"{max(row[k]['grad'].values()):.1e}") if k in row else ("-", "-")  # noqa
        eb, ef32 = e("err_bf16"), e("err_fp32")
        print(f"| {B},{T},{H},{D} | {tf:.2f} | {tfb:.2f} | {cf:.2f} | {cfb:.2f} | {sf:.2f} | {sfb:.2f} "
              f"| {tpk:.0f} / {cpk:.0f} | {1e6 * tfb / (B * T):.2f} | {eb[0]} / {ef32[0]} | {eb[1]} / {ef32[1]} |")
    if len(args.variants) > 1:
        print("\n| B,T,H,D | " + " | ".join(f"{v} fwd / fwd+bwd (TFLOP/s)" for v in args.variants) + " |")
        print("|---|" + "---|" * len(args.variants))
        for row in results:
            cells = [f"{row['triton'][v][0]:.2f} / {row['triton'][v][1]:.2f} ({row['triton'][v][3]:.0f})"
                     for v in args.variants]
            print(f"| {','.join(map(str, row['shape']))} | " + " | ".join(cells) + " |")
    if args.profile:
        B, T, H, D = (int(s) for s in args.shapes[0].split(","))
        ins = make_inputs(B, T, H, D, dtype)
        do = torch.randn(B, T, H, D, device="cuda", dtype=dtype)
        print(f"\nper-kernel ms of one fwd+bwd at {args.shapes[0]} (variant {args.variants[0]}):")
        for t, name in profile_split(ins, do)[:12]:
            print(f"  {t:8.3f}  {name[:90]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, results=results), f, indent=1)


if __name__ == "__main__":
    main()
