"""Benchmark of the GKA core, both scan directions: Triton backend vs torch backend vs SDPA (one GPU, one run).

    python benchmarks/bench_gka_core.py [--shapes 128,197,6,64 ...] [--variants default chunk=16,cols=16 ...]
                                        [--json out.json]

For every (B, T, H, D): median ms (triton.testing.do_bench) of the forward and forward+backward of
gka_scan_bidirectional with backend="triton" (each kernel variant: "default" or comma-separated overrides
of gka_kernels.GKAKernelConfig's fields on top of the input dtype's default, e.g.
"schedule=bf16:20+2xbf16:10/bf16:20+2xbf16:15,chunk=32,num_warps=4,state_cols=16,precision_grad=tf32"), of the same op with
backend="torch", and of F.scaled_dot_product_attention (non-causal, [B, H, T, D]); peak memory of one
forward+backward; relative error vs the float64 reference (exact solve) on a slice (first batch element,
first 2 heads, at most 1025 tokens), for bf16 and fp32 inputs and every variant. Also prints the per-kernel time split
of one forward+backward from torch.profiler and the FLOPs the kernels execute.
"""
import argparse
import collections
import functools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gka_kernels.gka_function as gkf  # noqa: E402
from gka_vision.ops import gka_scan_bidirectional  # noqa: E402
from gka_vision.ops.gka_reference import gka_scan_reference  # noqa: E402

# CPU only for a smoke test of this script: TRITON_INTERPRET=1 python benchmarks/bench_gka_core.py --shapes 1,40,2,32
DEV = "cuda" if torch.cuda.is_available() else "cpu"
DEFAULT_SHAPES = ["128,197,6,64", "64,577,6,64", "16,1025,6,64", "4,4097,6,64"]


def make_inputs(B, T, H, D, dtype, seed=0, requires_grad=True):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    u = lambda *s: torch.rand(*s, device=DEV, generator=gen)  # noqa: E731
    beta = torch.sigmoid(r(B, T, H, 1))
    q = F.normalize(r(B, T, H, D), dim=-1)
    k = F.normalize(r(B, T, H, D), dim=-1) * beta
    v = r(B, T, H, D) * beta
    alpha = torch.sigmoid(r(B, T, H))
    # g = -exp(A_log) softplus(w.x + dt_bias) with A_log = log U(1,16), dt ~ logU(1e-3, 1e-1) (docs/gka_spec.md sec. 1)
    A = torch.empty(H, device=DEV).uniform_(1, 16, generator=gen)
    dt = torch.exp(torch.empty(B, T, H, device=DEV).uniform_(-6.9, -2.3, generator=gen))
    g = -A * dt
    g_rev = -A * torch.exp(u(B, T, H) * 4.6 - 6.9)
    ins = [t.to(dtype) for t in (q, k, v, alpha)] + [g, g_rev]
    return [t.requires_grad_(requires_grad) for t in ins]


def rel(x, y):
    return ((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-30)).item()


_VARIANT = {"config": None}  # the kernel config of the variant being timed (None: default_config(dtype))


def set_variant(variant):
    """'default' or a GKAKernelConfig spec 'key=value,...' (keys: the fields of gka_kernels.GKAKernelConfig,
    e.g. schedule, chunk, num_warps, state_cols, max_regs, prefetch, precision_hi/states/grad/lo), applied on
    top of the default config of the input dtype."""
    if variant == "default":
        _VARIANT["config"] = None
        return
    try:
        _VARIANT["config"] = variant
        gkf.GKAKernelConfig.from_spec(variant)  # a bad spec fails here, with its message
    except ValueError as e:
        raise SystemExit(f"bench_gka_core: {e}")


@functools.lru_cache(maxsize=None)
def _resolved_config(spec, dtype):
    base = gkf.default_config(dtype)
    return base if spec is None else gkf.GKAKernelConfig.from_spec(spec, base)


def variant_config(dtype):
    """The config of the variant being timed for inputs of this solve dtype (parsed once, not in the timed calls)."""
    return _resolved_config(_VARIANT["config"], dtype)


def bench(fn, grad_to_none=None):
    """Median ms: triton.testing.do_bench on the GPU, three wall-clock runs on the CPU (smoke test only)."""
    if DEV == "cuda":
        return do_bench(fn, grad_to_none=grad_to_none)
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        ts.append(1e3 * (time.perf_counter() - t0))
        for t in grad_to_none or []:
            t.grad = None
    return sorted(ts)[1]


def time_op(fn, ins, do, fwd_only=False):
    """(fwd ms, fwd+bwd ms, peak MiB of one fwd+bwd above the inputs); fwd_only: (fwd ms, nan, nan)."""
    with torch.no_grad():
        t_f = bench(lambda: fn(*ins))
    if fwd_only:
        return t_f, float("nan"), float("nan")

    def step():
        fn(*ins).backward(do)

    t_fb = bench(step, grad_to_none=ins)
    if DEV == "cpu":
        step()
        for t in ins:
            t.grad = None
        return t_f, t_fb, float("nan")
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
    if backend == "triton":
        return lambda q, k, v, a, g, g2: gkf.gka_scan_bidirectional_triton(q, k, v, a, g, g2,
                                                                           config=variant_config(q.dtype))
    return lambda q, k, v, a, g, g2: gka_scan_bidirectional(q, k, v, a, g, g2, backend=backend)


def load_anchor_ops():
    """{'authors': (fn, info), 'fla_gka': (fn, info)} with fn(q, k, v, alpha, g, g_rev) -> the mean of both scan
    directions (two calls of the anchor's one-direction op), fn None where the anchor is not importable."""
    try:
        from anchors import load_anchors  # benchmarks/anchors.py
        loaded = load_anchors()
    except Exception as e:  # noqa: BLE001  (a missing anchor is reported, not fatal)
        return {name: (None, f"{type(e).__name__}: {e}") for name in ("authors", "fla_gka")}
    out = {}
    for name, anchor in loaded.items():
        fn = anchor.fn
        out[name] = (None if fn is None else
                     (lambda f: lambda q, k, v, a, g, g2: 0.5 * (f(q, k, v, a, g) + f(q, k, v, a, g2, reverse=True)))(fn),
                     anchor.info)
    return out


def sdpa_op(q, k, v, *_):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


_REF_CACHE = {}


def errors(B, T, H, D, dtype, op=None, grads=True):
    """Forward and per-gradient rel. errors of the triton op (or `op`) vs the float64 reference on a slice
    (the reference is computed once per slice and dtype and reused for every variant)."""
    ins = make_inputs(B, T, H, D, dtype, seed=1)
    sl = [t.detach()[:1, :min(T, 1025), :2].contiguous().requires_grad_() for t in ins]
    do = torch.randn(sl[0].shape, device=DEV, generator=torch.Generator(device=DEV).manual_seed(2))
    key = (B, T, H, D, dtype)  # the slice of one shape's inputs (two shapes can share a slice shape)
    if key not in _REF_CACHE:
        d = [t.detach().double().requires_grad_() for t in sl]
        ref = 0.5 * (gka_scan_reference(*d[:5]) + gka_scan_reference(*d[:4], d[5], reverse=True))
        _REF_CACHE[key] = (ref.detach(), torch.autograd.grad(ref, d, do.double()))
    ref, grads_ref = _REF_CACHE[key]
    o = (op or gka_op("triton"))(*sl)
    if not grads:
        return rel(o, ref), {}
    gs = torch.autograd.grad(o, sl, do.to(o.dtype))
    gerr = {n: rel(x, y) for n, x, y in zip(["q", "k", "v", "alpha", "g", "g_rev"], gs, grads_ref)}
    return rel(o, ref), gerr


def kernel_flops(B, T, H, D, dtype, ndir=2):
    """FLOPs (2 per multiply-add) the four kernels execute with the current config, padded tiles included (the last
    chunk's tile has gka_function.tail_rows rows).

    tf32x3 dots count once (their 3 tensor-core products are not counted); bf16 and tf32 steps count alike.
    """
    L = gkf._Launch(variant_config(dtype), D)
    BD = L.BD
    _, f1, fr, _, f2 = L.iters(30, False)
    _, b1, br, _, b2 = L.iters(30, True)
    it = lambda c: 2 * BD * BD + 4 * c * BD          # noqa: E731  one application of A per token, c-row tiles
    fwd = lambda c: (f1 + fr * (f2 + 1)) * it(c) + 4 * BD * BD + 2 * c * c + 8 * c * BD + 4 * BD * BD  # noqa: E731
    bwd = lambda c: (b1 + br * (b2 + 1)) * it(c) + 14 * BD * BD + 4 * c * c + 20 * c * BD + 6 * BD * BD  # noqa: E731

    def launch(per_token, C):  # over both directions: NC - 1 tiles of C rows, the last one of tail_rows rows
        R = gkf.tail_rows(T, C, L.tail_tile)
        return B * H * ndir * ((triton.cdiv(T, C) - 1) * C * per_token(C) + R * per_token(R))
    return launch(fwd, L.BC_fwd), launch(bwd, L.BC)


def launch_split(kernels, n_iter):
    """[(ms, label)] per launch slot of one iteration, largest first, from `kernels`: the (name, device us) of every
    kernel launched in `n_iter` identical iterations, in launch order. A kernel launched m > 1 times an iteration
    (the backward solve kernel's two launches) gets one row per launch, labelled `name [i/m]` in launch order."""
    counts = collections.Counter(n for n, _ in kernels)
    for n, c in counts.items():
        if c % n_iter:
            raise ValueError(f"launch_split: {n} launched {c} times in {n_iter} iterations")
    seen, total = collections.Counter(), collections.Counter()
    for n, us in kernels:
        m = counts[n] // n_iter
        label = n if m == 1 else f"{n} [{seen[n] % m + 1}/{m}]"
        seen[n] += 1
        total[label] += us
    return sorted(((t / n_iter / 1000, label) for label, t in total.items()), reverse=True)


def profile_split(ins, do, n_iter=5):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    fn = gka_op("triton")
    for _ in range(2):
        fn(*ins).backward(do)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n_iter):
            fn(*ins).backward(do)
        torch.cuda.synchronize()
    kernels = [(e.name, e.time_range.elapsed_us()) for e in sorted(prof.events(), key=lambda e: e.time_range.start)
               if e.device_type == DeviceType.CUDA and e.time_range.elapsed_us() > 0]
    for t in ins:
        t.grad = None
    return launch_split(kernels, n_iter)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="B,T,H,D")
    p.add_argument("--variants", nargs="*", default=["default"],
                   help="'default' or GKAKernelConfig overrides key=value,... (schedule, chunk, num_warps, ...); "
                        "the first one fills the main table")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--no-torch", action="store_true", help="skip the torch backend")
    p.add_argument("--no-anchors", action="store_true", help="skip the authors' kernels and fla's GKA port")
    p.add_argument("--no-errors", action="store_true")
    p.add_argument("--no-anchor-errors", action="store_true",
                   help="time the anchors but measure only this project's errors (the authors' kernels autotune "
                        "for fp32 inputs for minutes)")
    p.add_argument("--profile", action="store_true", help="per-kernel time split at the first shape")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    info = dict(gpu=torch.cuda.get_device_name() if DEV == "cuda" else "cpu", torch=torch.__version__, triton=triton.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), dtype=args.dtype,
                command="python " + " ".join(sys.argv))
    anchors = {} if args.no_anchors else load_anchor_ops()
    info["anchors"] = {name: info_ for name, (_, info_) in anchors.items()}
    print(json.dumps(info))
    results = []
    for shape in args.shapes:
        B, T, H, D = (int(s) for s in shape.split(","))
        ins = make_inputs(B, T, H, D, dtype)
        do = torch.randn(B, T, H, D, device=DEV, dtype=dtype)
        row = dict(shape=[B, T, H, D], triton={})
        for variant in args.variants:
            set_variant(variant)
            try:
                row["triton"][variant] = time_op(gka_op("triton"), ins, do)
            except Exception as e:  # a config that does not compile on this GPU: report, go on
                print(shape, "triton", variant, "FAILED:", type(e).__name__, str(e)[:200], flush=True)
                row["triton"][variant] = (float("nan"),) * 3
            nf, nb = kernel_flops(B, T, H, D, dtype)
            row["triton"][variant] += ((nf + nb) / row["triton"][variant][1] / 1e9,)  # TFLOP/s fwd+bwd
            print(shape, "triton", variant, ["%.3f" % x for x in row["triton"][variant]], flush=True)
            if args.no_errors or row["triton"][variant][0] != row["triton"][variant][0]:
                continue
            for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                ef, eg = errors(B, T, H, D, dt)
                row.setdefault("errors", {}).setdefault(variant, {})[name] = dict(fwd=ef, grad=eg)
                if variant == args.variants[0]:
                    row[f"err_{name}"] = dict(fwd=ef, grad=eg)
                print(shape, "error", variant, name, "fwd %.2e" % ef,
                      " ".join(f"d{n} {e:.2e}" for n, e in eg.items()), flush=True)
        set_variant(args.variants[0])
        if not args.no_torch:
            row["torch"] = time_op(gka_op("torch"), ins, do)
            print(shape, "torch", ["%.3f" % x for x in row["torch"]], flush=True)
        for name, (fn, _) in anchors.items():
            if fn is None:
                continue
            fwd_only = name == "fla_gka"
            try:
                row[name] = time_op(fn, ins, do, fwd_only=fwd_only)
                if not (args.no_errors or args.no_anchor_errors):
                    for ename, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                        ef, eg = errors(B, T, H, D, dt, op=fn, grads=not fwd_only)
                        row.setdefault("anchor_errors", {}).setdefault(name, {})[ename] = dict(fwd=ef, grad=eg)
                        print(shape, "error", name, ename, "fwd %.2e" % ef,
                              " ".join(f"d{n} {e:.2e}" for n, e in eg.items()), flush=True)
            except Exception as e:  # noqa: BLE001
                print(shape, name, "FAILED:", type(e).__name__, str(e)[:200], flush=True)
                row[name] = (float("nan"),) * 3
            print(shape, name, ["%.3f" % x for x in row[name]], flush=True)
        row["sdpa"] = time_op(sdpa_op, ins, do)
        print(shape, "sdpa", ["%.3f" % x for x in row["sdpa"]], flush=True)
        nf, nb = kernel_flops(B, T, H, D, dtype)
        row["gflop_fwd"], row["gflop_bwd"] = nf / 1e9, nb / 1e9
        results.append(row)
        del ins, do
        if DEV == "cuda":
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
    if any(name in row for row in results for name in ("authors", "fla_gka")):
        print("\nAnchors, same inputs, same process (both directions; the authors' op called twice): ms and the "
              "anchor's time over this project's (default variant); errors vs the float64 exact solve, bf16 / fp32 "
              "inputs")
        print("\n| B,T,H,D | ours fwd | ours fwd+bwd | authors fwd | authors fwd+bwd | authors/ours fwd+bwd "
              "| fla port fwd | fla/ours fwd | err fwd ours / authors / fla (bf16) | err grad ours / authors (bf16) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for row in results:
            tf, tfb = row["triton"][args.variants[0]][:2]
            af, afb = row.get("authors", (float("nan"),) * 3)[:2]
            ff = row.get("fla_gka", (float("nan"),) * 3)[0]
            ae = row.get("anchor_errors", {})
            ef = lambda n: f"{ae[n]['bf16']['fwd']:.1e}" if n in ae else "-"  # noqa: E731
            eg = lambda n: f"{max(ae[n]['bf16']['grad'].values()):.1e}" if n in ae and ae[n]['bf16']['grad'] else "-"  # noqa
            ours_f = f"{row['err_bf16']['fwd']:.1e}" if "err_bf16" in row else "-"
            ours_g = f"{max(row['err_bf16']['grad'].values()):.1e}" if "err_bf16" in row else "-"
            print(f"| {','.join(map(str, row['shape']))} | {tf:.2f} | {tfb:.2f} | {af:.2f} | {afb:.2f} | {afb / tfb:.2f} "
                  f"| {ff:.2f} | {ff / tf:.2f} | {ours_f} / {ef('authors')} / {ef('fla_gka')} | {ours_g} / {eg('authors')} |")
    if len(args.variants) > 1:
        print("\nKernel variants: fwd / fwd+bwd ms (TFLOP/s of the counted FLOPs); errors: fwd / worst gradient, "
              "bf16 inputs ; fp32 inputs")
        print("\n| variant | " + " | ".join(",".join(map(str, r["shape"])) for r in results) + " |")
        print("|---|" + "---|" * len(results))
        for v in args.variants:
            cells = []
            for row in results:
                t = row["triton"][v]
                err = row.get("errors", {}).get(v)
                e = (" ; ".join(f"{err[n]['fwd']:.1e} / {max(err[n]['grad'].values()):.1e}" for n in ("bf16", "fp32"))
                     if err else "-")
                cells.append(f"{t[0]:.2f} / {t[1]:.2f} ({t[3]:.0f}); err {e}")
            print(f"| `{v}` | " + " | ".join(cells) + " |")
    if args.profile and DEV == "cuda":
        B, T, H, D = (int(s) for s in args.shapes[0].split(","))
        ins = make_inputs(B, T, H, D, dtype)
        do = torch.randn(B, T, H, D, device=DEV, dtype=dtype)
        for v in args.variants:
            set_variant(v)
            try:
                split = profile_split(ins, do)
            except Exception as e:
                print(f"\nprofile of {v} FAILED: {type(e).__name__} {str(e)[:200]}")
                continue
            print(f"\nper-kernel ms of one fwd+bwd at {args.shapes[0]} (variant {v}):")
            for t, name in split[:10]:
                print(f"  {t:8.3f}  {name[:90]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, results=results), f, indent=1)


if __name__ == "__main__":
    main()
