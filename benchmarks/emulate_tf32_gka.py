"""CPU emulation of the Triton GKA kernels' arithmetic with tf32 / bf16 operand rounding (docs/kernels.md).

    python benchmarks/emulate_tf32_gka.py

`kernels()` is a torch port of kernels/gka_chunk.py for one scan direction (forward and the implicit
backward, same chunked formulas), where every product goes through `mm(a, b, prec)`: "ieee" (fp32),
"tf32" (both operands rounded to 10 mantissa bits, round-to-nearest) or "tf32x3" (hi*hi + hi*lo + lo*hi).
It prints relative errors of the output and of every gradient against autograd through the float64
reference (exact solve) for the precision schemes of run 1 and of the current kernels. Predictions for
the GPU, which `tl.dot(input_precision=...)` makes there; the interpreter computes every dot in fp32.
"bf16" rounds both operands to bf16 (round-to-nearest-even) and accumulates in fp32.

Solve schedules (error vs cost):

    python benchmarks/emulate_tf32_gka.py --schedules "tf32:20+1x20/tf32:20+1x30" "bf16:20+2xbf16:10/bf16:20+2xbf16:12"

A schedule is FWD/BWD (BWD omitted: same as FWD); each half is `P1:n1[+RxP2:n2]`: a first Chebyshev
round of n1 steps whose operator products use precision P1 (bf16 | tf32 | tf32x3 | ieee), then R
refinement rounds, each r = b - A x with tf32x3 products and x += n2 Chebyshev steps on r in precision
P2 (`P2:` omitted: P2 = P1). Example: "bf16:20+1xtf32:10/bf16:20+1xtf32:15". Options: --cases
(T:gscale list, default 1:0.5 33:0.5 197:0.5 197:0.02), --inputs (fp32, bf16 or both: inputs used as
they are or rounded to bf16 first), --margin (default 3: a schedule passes when every error is at least
that many times under the targets o 2e-3 / grads 1e-2 for fp32 inputs, 1e-2 / 3e-2 for bf16 inputs),
--seeds (input seeds per case, default 1 = the seed of the default output; the worst is reported).
The cost column counts operator applications per token of forward + backward solves in tf32-step
equivalents: a bf16 step 0.5, a tf32 step 1, a tf32x3 residual 3 (ieee counted as 3).
All states / read-out / gradient products stay tf32x3 as in the kernels.
"""
import argparse
import re

import torch

from gka_vision.ops import gka_chunked as m
from gka_vision.ops.gka_reference import gka_scan_reference


def tf32(x):
    """Round fp32 to tf32 (10 mantissa bits), to nearest, ties away from zero (cvt.rna.tf32.f32)."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


def bf16(x):
    """Round fp32 to bf16 (8 mantissa bits), round-to-nearest-even; kept in fp32."""
    return x.to(torch.bfloat16).float()


def mm(a, b, prec):
    if prec == "ieee":
        return a @ b
    if prec == "tf32":
        return tf32(a) @ tf32(b)
    if prec == "bf16":
        return bf16(a) @ bf16(b)
    if prec == "tf32x3":
        ah, bh = tf32(a), tf32(b)
        return ah @ bh + ah @ tf32(b - bh) + tf32(a - ah) @ bh
    raise ValueError(prec)


def inputs(B, T, H, D, dtype, gscale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    beta = torch.sigmoid(torch.randn(B, T, H, 1, generator=gen))
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1) * beta
    v = torch.randn(B, T, H, D, generator=gen) * beta
    alpha = torch.sigmoid(torch.randn(B, T, H, generator=gen))
    g = -gscale * torch.rand(B, T, H, generator=gen)
    return [t.to(dtype).float() for t in (q, k, v, alpha)] + [g]


T_ = lambda x: x.transpose(-1, -2)  # noqa: E731

def kernels(q, k, v, alpha, g, do, P, C=32, n1=20, n2=20, n2b=30, n1b=None, a_r=0.02, sched=None):
    """P: dict of precisions: loop, hi, states. Returns o, (dq, dk, dv, dalpha, dg).
    sched: optional (fwd, bwd) solve schedules, each (P1, n1, R, P2, n2) (see `parse_schedule`);
    it replaces n1, n2, n1b, n2b and P["loop"]."""
    B, T, H, D = q.shape
    s = D ** -0.5
    Q, K, V, dO = (m._chunk(t.float(), C) for t in (q, k, v, do))
    A = m._chunk(alpha.float(), C)
    G = m._chunk(g.float(), C).cumsum(-1)
    N = G.shape[2]
    M = m._decay_mask(G); eG = G.exp()
    glast = G[..., -1]
    w = (glast[..., None] - G).exp()
    def states(X):
        loc = mm(T_(K * w[..., None]), X, P["states"])
        st = [K.new_zeros(B, H, D, D)]
        for n in range(N - 1):
            st.append(glast[:, :, n, None, None].exp() * st[-1] + loc[:, :, n])
        return torch.stack(st, 2)
    Hp, Sp = states(K), states(V)
    hi = P["hi"]
    kHk = (mm(K, Hp, hi) * K).sum(-1)
    KK = mm(K, T_(K), hi)
    fro2 = eG**2 * Hp.square().sum((-1, -2))[..., None] + 2 * eG * (M * kHk[..., None, :]).sum(-1) + (mm(M, KK * KK, hi) * M).sum(-1)
    fro = fro2.clamp_min(1e-24).sqrt(); lam = (a_r * fro).clamp_min(1e-6)
    def apply(X, p):
        return eG[..., None] * mm(X, Hp, p) + mm(mm(X, T_(K), p) * M, K, p) + lam[..., None] * X
    def cheb(b, it, p=P["loop"]):
        L = fro + lam; eta = (2 / (L + lam))[..., None]; r24 = (((L - lam) / (L + lam)) ** 2 / 4)[..., None]
        xp = torch.zeros_like(b); x = eta * b; om = torch.full_like(r24, 2.0)
        for _ in range(it):
            om = 1 / (1 - r24 * om)
            x, xp = x - om * eta * (apply(x, p) - b) + (om - 1) * (x - xp), x
        return x
    def solve(b, first, ref, sc=None):  # Chebyshev, then refinement round(s) with a `hi` residual
        if sc is not None:
            p1, m1, R, p2, m2 = sc
            x = cheb(b, m1, p1)
            for _ in range(R):
                x = x + cheb(b - apply(x, hi), m2, p2)
            return x
        x = cheb(b, first)
        if ref:
            x = x + cheb(b - apply(x, hi), ref)
        return x
    X = solve(Q, n1, n2, None if sched is None else sched[0])
    a = A[..., None]
    Qp = Q + a * (X - Q)
    O = s * (eG[..., None] * mm(Qp, Sp, hi) + mm(mm(Qp, T_(K), hi) * M, V, hi))
    # backward: bwd_solve
    dOV = mm(dO, T_(V), hi) * M
    dQp = s * (mm(dOV, K, hi) + eG[..., None] * mm(dO, T_(Sp), hi))
    QK = mm(Qp, T_(K), hi) * M
    dV = s * mm(T_(QK), dO, hi)
    dKg = s * mm(T_(dOV), Qp, hi)
    dQ = (1 - a) * dQp
    dA = (dQp * (X - Q)).sum(-1)
    dG = (Qp * dQp).sum(-1) - (K * dKg).sum(-1)
    Wg = s * mm(T_(Qp * eG[..., None]), dO, hi)
    Qb = solve(a * dQp, n1 if n1b is None else n1b, n2b, None if sched is None else sched[1])
    dQ = dQ + Qb
    act = a_r * fro > 1e-6
    cr = torch.where(act, -a_r * (X * Qb).sum(-1) / fro, torch.zeros_like(fro))
    XK = mm(X, T_(K), hi) * M
    QbK = mm(Qb, T_(K), hi) * M
    HX = eG[..., None] * mm(X, Hp, hi) + mm(XK, K, hi)
    ce = cr * eG
    e = (M * ce[..., None]).sum(-2)
    Wc = mm(T_(M), M * cr[..., None], hi)
    RK = -0.5 * (mm(T_(XK), Qb, hi) + mm(T_(QbK), X, hi)) + e[..., None] * mm(K, Hp, hi) + mm(Wc * KK, K, hi)
    dK = dKg + 2 * RK
    dG = dG - (Qb * HX).sum(-1) + cr * fro * fro - (K * RK).sum(-1)
    sigma = (ce * eG).sum(-1)
    U = -0.5 * (mm(T_(X * eG[..., None]), Qb, hi) + mm(T_(Qb * eG[..., None]), X, hi)) + sigma[..., None, None] * Hp + mm(T_(K * e[..., None]), K, hi)
    # bwd_states
    R = K.new_zeros(B, H, D, D); dS = K.new_zeros(B, H, D, D)
    run = K.new_zeros(B, H)
    dK = dK.clone(); dV = dV.clone(); dg = torch.zeros_like(dG)
    for c in reversed(range(N)):
        wc = w[:, :, c, :, None]
        RKi = wc * mm(K[:, :, c], R, P["states"])
        dKgi = wc * mm(V[:, :, c], T_(dS), P["states"])
        dVi = wc * mm(K[:, :, c], dS, P["states"])
        dK[:, :, c] += dKgi + 2 * RKi
        dV[:, :, c] += dVi
        dGc = dG[:, :, c] - (K[:, :, c] * dKgi).sum(-1) - (K[:, :, c] * RKi).sum(-1)
        dg[:, :, c] = dGc.flip(-1).cumsum(-1).flip(-1) + run[..., None]
        run = run + dGc.sum(-1)
        dec = glast[:, :, c, None, None].exp()
        R = dec * R + U[:, :, c]; dS = dec * dS + Wg[:, :, c]
    un = lambda x: m._unchunk(x, T)
    un3 = lambda x: m._unchunk(x[..., None], T)[..., 0]
    return un(O), (un(dQ), un(dK), un(dV), un3(dA), un3(dg))

SCHEMES = {
    "fp32 (ieee)": (dict(loop="ieee", hi="ieee", states="ieee"), (20, 20, 30)),
    "current: tf32 loop + refinement, tf32x3 rest": (dict(loop="tf32", hi="tf32x3", states="tf32x3"), (20, 20, 30)),
    "same with tf32 state kernels": (dict(loop="tf32", hi="tf32x3", states="tf32"), (20, 20, 30)),
    "run 1: all tf32, 30 / 40 steps": (dict(loop="tf32", hi="tf32", states="tf32"), (30, 0, 0)),
}


COST = {"bf16": 0.5, "tf32": 1.0, "tf32x3": 3.0, "ieee": 3.0}
_HALF = re.compile(r"^(bf16|tf32x3|tf32|ieee):(\d+)(?:\+(\d+)x(?:(bf16|tf32x3|tf32|ieee):)?(\d+))?$")


def parse_schedule(text):
    """"P1:n1[+RxP2:n2][/P1:n1[+RxP2:n2]]" -> ((P1, n1, R, P2, n2) forward, same backward)."""
    halves = text.split("/")
    if len(halves) > 2:
        raise ValueError(text)
    out = []
    for h in halves:
        mt = _HALF.match(h.strip())
        if not mt:
            raise ValueError(f"bad schedule half {h!r} (want P1:n1[+RxP2:n2])")
        p1, n1, R, p2, n2 = mt.groups()
        out.append((p1, int(n1), int(R or 0), p2 or p1, int(n2 or 0)))
    return out[0], out[-1]


def cost(sched):
    """tf32-step equivalents per token, forward + backward solves."""
    return sum(COST[p1] * n1 + R * (COST["tf32x3"] + COST[p2] * n2) for p1, n1, R, p2, n2 in sched)


TARGETS = {"fp32": (2e-3, 1e-2), "bf16": (1e-2, 3e-2)}


def run_schedules(schedules, cases, input_kinds, margin, seeds=1):
    torch.set_num_threads(1)
    P = dict(loop="tf32", hi="tf32x3", states="tf32x3")
    parsed = [(t, parse_schedule(t)) for t in schedules]
    worst = {}
    print("| inputs | T | g scale | schedule (fwd/bwd) | cost | o | dq | dk | dv | dalpha | dg | worst grad |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in input_kinds:
        for (T, gs), seed in [(c, sd) for c in cases for sd in range(seeds)]:
            ins = inputs(2, T, 2, 64, torch.bfloat16 if kind == "bf16" else torch.float32, gs, seed=seed)
            do = torch.randn(2, T, 2, 64, generator=torch.Generator().manual_seed(1 + 1000 * seed))
            d = [t.double().requires_grad_() for t in ins]
            ref = gka_scan_reference(*d)
            gref = torch.autograd.grad(ref, d, do.double())
            rel = lambda x, y: ((x.double() - y).norm() / y.norm().clamp_min(1e-3)).item()  # noqa: E731
            for text, sc in parsed:
                o, gr = kernels(*ins, do, P, sched=sc)
                eo, eg = rel(o, ref), [rel(x, y) for x, y in zip(gr, gref)]
                w = worst.setdefault((kind, text), [0.0, 0.0])
                w[0], w[1] = max(w[0], eo), max(w[1], *eg)
                errs = " | ".join(f"{e:.1e}" for e in eg)
                print(f"| {kind} | {T} | {gs}{f' s{seed}' if seeds > 1 else ''} | {text} | {cost(sc):g} | {eo:.1e} | {errs} | {max(eg):.1e} |", flush=True)
    print(f"\nWorst over cases {' '.join(f'{T}:{gs}' for T, gs in cases)}, {seeds} seed(s); pass = {margin:g}x under target")
    print("| schedule (fwd/bwd) | cost | " + " | ".join(f"{k}: o | {k}: grads | {k} pass" for k in input_kinds) + " |")
    print("|---|---|" + "---|---|---|" * len(input_kinds))
    for text, sc in parsed:
        cells = []
        for kind in input_kinds:
            eo, eg = worst[(kind, text)]
            to, tg = TARGETS[kind]
            ok = eo * margin <= to and eg * margin <= tg
            cells.append(f"{eo:.1e} | {eg:.1e} | {'yes' if ok else 'no'}")
        print(f"| {text} | {cost(sc):g} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", nargs="+", help="solve schedules FWD/BWD (see module docstring)")
    ap.add_argument("--cases", nargs="+", default=["1:0.5", "33:0.5", "197:0.5", "197:0.02"], help="T:gscale")
    ap.add_argument("--inputs", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--margin", type=float, default=3.0)
    ap.add_argument("--seeds", type=int, default=1, help="input seeds per case (worst is reported)")
    args = ap.parse_args()
    if args.schedules:
        cases = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.cases]
        kinds = ["fp32", "bf16"] if args.inputs == "both" else [args.inputs]
        return run_schedules(args.schedules, cases, kinds, args.margin, args.seeds)
    legacy()


def legacy():
    torch.set_num_threads(1)
    print("| T | g scale | scheme | o | dq | dk | dv | dalpha | dg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for T in (1, 33, 197):
        for gs in (0.5, 0.02):
            ins = inputs(2, T, 2, 64, torch.bfloat16, gs)
            do = torch.randn(2, T, 2, 64, generator=torch.Generator().manual_seed(1))
            d = [t.double().requires_grad_() for t in ins]
            ref = gka_scan_reference(*d)
            gref = torch.autograd.grad(ref, d, do.double())
            rel = lambda x, y: ((x.double() - y).norm() / y.norm().clamp_min(1e-3)).item()  # noqa: E731
            for name, (P, (n1, n2, n2b)) in SCHEMES.items():
                if n2 == 0:   # run 1: no refinement, backward solve num_iter + 10
                    o, gr = kernels(*ins, do, P, n1=30, n2=0, n2b=0, n1b=40)
                else:
                    o, gr = kernels(*ins, do, P, n1=n1, n2=n2, n2b=n2b)
                errs = " | ".join(f"{rel(x, y):.1e}" for x, y in zip(gr, gref))
                print(f"| {T} | {gs} | {name} | {rel(o, ref):.1e} | {errs} |", flush=True)


if __name__ == "__main__":
    main()
