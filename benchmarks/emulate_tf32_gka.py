"""CPU emulation of the Triton GKA kernels' arithmetic with tf32 / bf16 operand rounding (docs/kernels.md).

    python benchmarks/emulate_tf32_gka.py

`kernels()` is a torch port of kernels/gka_chunk.py for one scan direction (forward and the implicit
backward, same chunked formulas), where every product goes through `mm(a, b, prec)`: "ieee" (fp32),
"tf32" (both operands rounded to 10 mantissa bits, round-to-nearest), "tf32t" (truncated instead, as the
tensor core reads fp32 for input_precision="tf32"; matches H200 run 5 where "tf32" did not), "tf32x3"
(hi*hi + hi*lo + lo*hi) or "bf16x3" (the same split with bf16 hi / lo parts, ~16 mantissa bits, the lo*lo
term dropped; costed 1.5 tf32 products).
It prints relative errors of the output and of every gradient against autograd through the float64
reference (exact solve) for the precision schemes of run 1 and of the current kernels. Predictions for
the GPU, which `tl.dot(input_precision=...)` makes there; the interpreter computes every dot in fp32.
"bf16" rounds both operands to bf16 (round-to-nearest-even) and accumulates in fp32; "bf16f" (Chebyshev steps only) is
"bf16" in the kernels' folded step form (GKAKernelConfig.folded_steps, docs/kernels.md "Folded steps"). "fp16" (Chebyshev steps
only) runs the steps on a scaled system whose operands fit fp16's range (A / max_t ||H_t||_F of the chunk,
H_p / ||H_p||_F, each right-hand side scaled by lam_t / ||b_t||) with fp16-rounded operands: an experiment
that the kernels do not use (docs/kernels.md, "fp16 Chebyshev steps").

Solve schedules (error vs cost):

    python benchmarks/emulate_tf32_gka.py --schedules "tf32:20+1x20/tf32:20+1x30" "bf16:20+2xbf16:10/bf16:20+2xbf16:12"

A schedule is FWD/BWD (BWD omitted: same as FWD); each half is `P1:n1[+RxP2:n2]`: a first Chebyshev
round of n1 steps whose operator products use precision P1 (bf16 | tf32 | tf32x3 | ieee), then R
refinement rounds, each r = b - A x with --hi products (default bf16x3, as the kernels) and x += n2
Chebyshev steps on r in precision P2 (`P2:` omitted: P2 = P1; P is bf16, bf16f, fp16, tf32, tf32x3 or ieee).
Example: "bf16:20+1xtf32:10/bf16:20+1xtf32:15". Options: --cases
(T:gscale list, default 1:0.5 33:0.5 197:0.5 197:0.02), --inputs (fp32, bf16 or both: inputs used as
they are or rounded to bf16 first), --margin (default 3: a schedule passes when every error is at least
that many times under the targets o 2e-3 / grads 1e-2 for fp32 inputs, 1e-2 / 3e-2 for bf16 inputs),
--seeds (input seeds per case, default 1 = the seed of the default output; the worst is reported).
The cost column counts operator applications per token of forward + backward solves in tf32-step
equivalents: a bf16 step 0.5, a tf32 step 1, a tf32x3 residual 3 (ieee counted as 3).
All states / read-out / gradient products use --hi too. At T = 1 the gate gradient is exactly zero (no earlier
state), so its error is left out of the worst-case columns there.

Backward products outside the solve (docs/kernels.md, "Which backward products need tf32x3"):

    python benchmarks/emulate_tf32_gka.py --products
    python benchmarks/emulate_tf32_gka.py --grad-prec "" "dV=tf32,KK=tf32,RK_h=bf16,U_k=bf16" --grad-sweep

Every product of the backward outside the solve loops has a name (GRAD_PRODUCTS: dOV, dQp_k, dQp_s, QK,
dV, dKg, Wg of _bwd_solve_kernel's phase 1; XK, QbK, HX_h, HX_k, Wc, KK, RK_xq, RK_qx, RK_h, RK_w, U_xq,
U_qx, U_k of phase 3; st_RK, st_dKg, st_dV of _bwd_states_kernel); groups phase1, phase3, states,
solve_kernel (phase1 + phase3), all. Each --grad-prec SPEC ("name=prec,group=prec,...", later items win,
"" = default: tf32x3 everywhere) gives one table row of worst errors over --cases x --seeds;
the forward's products outside the Chebyshev steps are named too (FWD_PRODUCTS: fro_kHk, fro_KK, fro_MKK,
ro_QK, ro_S, ro_V of _fwd_solve_kernel; fst_K, fst_V of _fwd_states_kernel; res_f, res_b = the refinement
residuals of the forward / backward solve), with groups residual, fwd, fwd_states, bwd_states (= states),
scans (= PREC_STATES), and the kernels' other knobs hi (residual + fwd = PREC_HI), grad (PREC_GRAD, 16
products), lo (PREC_LO: dV, KK, RK_h, U_k). Gate scale "w" in --cases (e.g. 577:w) = the benchmark's weak gates.
--grad-sweep [PREC] adds one row per product alone at PREC (default tf32). These rows use --schedule (default: the kernels'
"bf16:15+3xbf16:10/bf16:15+2xbf16:15") and --chunk (default 16 = the kernels' BC). The last column is
the _bwd_solve_kernel non-solve dot cost relative to all-tf32x3 (FLOPs x 3 for tf32x3, 1.5 bf16x3, 1 tf32,
0.5 bf16); before it the largest per-case error increase over the first spec, after it the dot cost of the
whole forward + backward (Chebyshev steps included, `total_cost`) relative to the default; `--products`
prints that cost split by part.

    python benchmarks/emulate_tf32_gka.py --inputs both --seeds 3 --cases 33:0.5 33:0.02 33:w 197:0.5 \
        197:0.02 197:w 577:0.5 577:0.02 577:w --grad-prec "" residual=bf16x3 fwd=bf16x3 bwd_states=bf16x3
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


def tf32t(x):
    """Truncate fp32 to tf32 (drop the low 13 bits): how the tensor core reads fp32 operands of
    tl.dot(input_precision="tf32"); biased toward zero. Reproduces H200 run 5 (lo=tf32: dg 2.1e-3 / 6.4e-3
    at T = 197 / 577), which round-to-nearest "tf32" underestimates 10-30x (docs/kernels.md)."""
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


def bf16(x):
    """Round fp32 to bf16 (8 mantissa bits), round-to-nearest-even; kept in fp32."""
    return x.to(torch.bfloat16).float()


def fp16(x):
    """Round fp32 to fp16 (11 significant bits, range 6e-8 .. 65504), round-to-nearest-even; kept in fp32."""
    return x.to(torch.float16).float()


def mm(a, b, prec):
    if prec == "ieee":
        return a @ b
    if prec == "tf32":
        return tf32(a) @ tf32(b)
    if prec == "tf32t":
        return tf32t(a) @ tf32t(b)
    if prec == "bf16":
        return bf16(a) @ bf16(b)
    if prec == "fp16":
        return fp16(a) @ fp16(b)
    if prec == "tf32x3":
        ah, bh = tf32(a), tf32(b)
        return ah @ bh + ah @ tf32(b - bh) + tf32(a - ah) @ bh
    if prec == "bf16x3":  # a = a_hi + a_lo, both bf16; the lo*lo term dropped; small terms summed first
        ah, bh = bf16(a), bf16(b)
        return (ah @ bf16(b - bh) + bf16(a - ah) @ bh) + ah @ bh
    raise ValueError(prec)


def inputs(B, T, H, D, dtype, gscale, seed=0):
    """gscale: g ~ -gscale U(0, 1), or "w": the benchmark's weak gates g = -A dt, A ~ U(1, 16) per head,
    dt ~ logU(1e-3, 1e-1) (long memories; run 5's tf32 failure at T = 577 came with those)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    beta = torch.sigmoid(torch.randn(B, T, H, 1, generator=gen))
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1) * beta
    v = torch.randn(B, T, H, D, generator=gen) * beta
    alpha = torch.sigmoid(torch.randn(B, T, H, generator=gen))
    if gscale == "w":
        A = 1 + 15 * torch.rand(H, generator=gen)
        g = -A * torch.exp(-6.9 + 4.6 * torch.rand(B, T, H, generator=gen))
    else:
        g = -gscale * torch.rand(B, T, H, generator=gen)
    return [t.to(dtype).float() for t in (q, k, v, alpha)] + [g]


T_ = lambda x: x.transpose(-1, -2)  # noqa: E731

def kernels(q, k, v, alpha, g, do, P, C=32, n1=20, n2=20, n2b=30, n1b=None, a_r=0.02, sched=None, GP=None):
    """P: dict of precisions: loop, hi, states. Returns o, (dq, dk, dv, dalpha, dg).
    GP: optional {product name: precision} for the named products outside the Chebyshev steps
    (PRODUCTS: the backward's GRAD_PRODUCTS, the forward's FWD_PRODUCTS, the residuals res_f / res_b).
    sched: optional (fwd, bwd) solve schedules, each (P1, n1, R, P2, n2) (see `parse_schedule`);
    it replaces n1, n2, n1b, n2b and P["loop"]."""
    B, T, H, D = q.shape
    s = D ** -0.5
    Q, K, V, dO = (m._chunk(t.float(), C) for t in (q, k, v, do))
    A = m._chunk(alpha.float(), C)
    G = m._chunk(g.float(), C).cumsum(-1)
    N = G.shape[2]
    M = m._decay_mask(G); eG = G.exp()
    GP = GP or {}
    gp = lambda name: GP.get(name, P["states"] if name.startswith(("st_", "fst_")) else P["hi"])  # noqa: E731
    glast = G[..., -1]
    w = (glast[..., None] - G).exp()
    def states(X, name):
        loc = mm(T_(K * w[..., None]), X, gp(name))
        st = [K.new_zeros(B, H, D, D)]
        for n in range(N - 1):
            st.append(glast[:, :, n, None, None].exp() * st[-1] + loc[:, :, n])
        return torch.stack(st, 2)
    Hp, Sp = states(K, "fst_K"), states(V, "fst_V")
    hi = P["hi"]
    kHk = (mm(K, Hp, gp("fro_kHk")) * K).sum(-1)
    KK = mm(K, T_(K), gp("fro_KK"))
    fro2 = (eG**2 * Hp.square().sum((-1, -2))[..., None] + 2 * eG * (M * kHk[..., None, :]).sum(-1)
            + (mm(M, KK * KK, gp("fro_MKK")) * M).sum(-1))
    fro = fro2.clamp_min(1e-24).sqrt(); lam = (a_r * fro).clamp_min(1e-6)
    def apply(X, p):
        return eG[..., None] * mm(X, Hp, p) + mm(mm(X, T_(K), p) * M, K, p) + lam[..., None] * X
    def chebyshev(op, b, lo, L, it):  # `it` Chebyshev steps for op(x) = b, spectrum [lo, L] per row
        eta = (2 / (L + lo))[..., None]; r24 = (((L - lo) / (L + lo)) ** 2 / 4)[..., None]
        xp = torch.zeros_like(b); x = eta * b; om = torch.full_like(r24, 2.0)
        for _ in range(it):
            om = 1 / (1 - r24 * om)
            x, xp = x - om * eta * (op(x) - b) + (om - 1) * (x - xp), x
        return x
    def cheb(b, it, p=P["loop"]):
        if p == "fp16":
            return cheb_fp16(b, it)
        if p == "bf16f":
            return cheb_folded(b, it)
        return chebyshev(lambda x: apply(x, p), b, lam, fro + lam, it)
    def cheb_folded(b, it):
        # the kernels' folded steps (gka_chunk._chebyshev_step_folded) with bf16 products: x scaled by -omega eta
        # before the products, the terms outside them summed first, the last product accumulated into them
        eta = (2 / (fro + 2 * lam))[..., None]; r24 = ((fro / (fro + 2 * lam)) ** 2 / 4)[..., None]
        xp = torch.zeros_like(b); x = eta * b; om = torch.full_like(r24, 2.0)
        for _ in range(it):
            om = 1 / (1 - r24 * om)
            c1 = om * eta
            xs = -c1 * x
            t = om * (1 - eta * lam[..., None]) * x + (1 - om) * xp + c1 * b
            acc = eG[..., None] * mm(xs, Hp, "bf16") + t
            x, xp = acc + mm(mm(xs, T_(K), "bf16") * M, K, "bf16"), x
        return x
    def cheb_fp16(b, it):
        # the kernels' fp16 steps (docs/gka_spec.md sec. 3): A / sig2 with sig2 = max_t ||H_t||_F of the chunk
        # (K / sqrt(sig2) has entries <= 1), H_p / ||H_p||_F, and each row's right-hand side scaled by
        # lam_t / ||b_t|| so that ||x_t|| <= 1; the solution is scaled back at the end
        sig2 = fro.amax(-1, keepdim=True)
        Ks = K / sig2.sqrt()[..., None]
        hpn = Hp.square().sum((-1, -2)).sqrt().clamp_min(1e-30)
        Hps = Hp / hpn[..., None, None]
        eGs = eG * (hpn[..., None] / sig2)
        lams, Ls = lam / sig2, (fro + lam) / sig2
        rs = (lam / b.norm(dim=-1).clamp_min(1e-30))[..., None]
        bs = b * rs / sig2[..., None]
        def op(x):
            return eGs[..., None] * mm(x, Hps, "fp16") + mm(mm(x, T_(Ks), "fp16") * M, Ks, "fp16") + lams[..., None] * x
        return chebyshev(op, bs, lams, Ls, it) / rs
    def solve(b, first, ref, sc=None, res=hi):  # Chebyshev, then refinement round(s) with a `res` residual
        if sc is not None:
            p1, m1, R, p2, m2 = sc
            x = cheb(b, m1, p1)
            for _ in range(R):
                x = x + cheb(b - apply(x, res), m2, p2)
            return x
        x = cheb(b, first)
        if ref:
            x = x + cheb(b - apply(x, res), ref)
        return x
    X = solve(Q, n1, n2, None if sched is None else sched[0], gp("res_f"))
    a = A[..., None]
    Qp = Q + a * (X - Q)
    O = s * (eG[..., None] * mm(Qp, Sp, gp("ro_S")) + mm(mm(Qp, T_(K), gp("ro_QK")) * M, V, gp("ro_V")))
    # backward: bwd_solve; every product outside the solve is named (GRAD_PRODUCTS) and takes its
    # precision from GP (default P["hi"], i.e. PREC_GRAD = tf32x3); the bwd_states products from P["states"]
    dOV = mm(dO, T_(V), gp("dOV")) * M
    dQp = s * (mm(dOV, K, gp("dQp_k")) + eG[..., None] * mm(dO, T_(Sp), gp("dQp_s")))
    QK = mm(Qp, T_(K), gp("QK")) * M
    dV = s * mm(T_(QK), dO, gp("dV"))
    dKg = s * mm(T_(dOV), Qp, gp("dKg"))
    dQ = (1 - a) * dQp
    dA = (dQp * (X - Q)).sum(-1)
    dG = (Qp * dQp).sum(-1) - (K * dKg).sum(-1)
    Wg = s * mm(T_(Qp * eG[..., None]), dO, gp("Wg"))
    Qb = solve(a * dQp, n1 if n1b is None else n1b, n2b, None if sched is None else sched[1], gp("res_b"))
    dQ = dQ + Qb
    act = a_r * fro > 1e-6
    cr = torch.where(act, -a_r * (X * Qb).sum(-1) / fro, torch.zeros_like(fro))
    XK = mm(X, T_(K), gp("XK")) * M
    QbK = mm(Qb, T_(K), gp("QbK")) * M
    HX = eG[..., None] * mm(X, Hp, gp("HX_h")) + mm(XK, K, gp("HX_k"))
    ce = cr * eG
    e = (M * ce[..., None]).sum(-2)
    Wc = mm(T_(M), M * cr[..., None], gp("Wc"))
    KKg = mm(K, T_(K), gp("KK"))
    RK = (-0.5 * (mm(T_(XK), Qb, gp("RK_xq")) + mm(T_(QbK), X, gp("RK_qx")))
          + e[..., None] * mm(K, Hp, gp("RK_h")) + mm(Wc * KKg, K, gp("RK_w")))
    dK = dKg + 2 * RK
    dG = dG - (Qb * HX).sum(-1) + cr * fro * fro - (K * RK).sum(-1)
    sigma = (ce * eG).sum(-1)
    U = (-0.5 * (mm(T_(X * eG[..., None]), Qb, gp("U_xq")) + mm(T_(Qb * eG[..., None]), X, gp("U_qx")))
         + sigma[..., None, None] * Hp + mm(T_(K * e[..., None]), K, gp("U_k")))
    # bwd_states
    R = K.new_zeros(B, H, D, D); dS = K.new_zeros(B, H, D, D)
    run = K.new_zeros(B, H)
    dK = dK.clone(); dV = dV.clone(); dg = torch.zeros_like(dG)
    for c in reversed(range(N)):
        wc = w[:, :, c, :, None]
        RKi = wc * mm(K[:, :, c], R, gp("st_RK"))
        dKgi = wc * mm(V[:, :, c], T_(dS), gp("st_dKg"))
        dVi = wc * mm(K[:, :, c], dS, gp("st_dV"))
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


COST = {"fp16": 0.5, "bf16": 0.5, "bf16f": 0.5, "tf32": 1.0, "tf32t": 1.0, "tf32x3": 3.0, "ieee": 3.0, "bf16x3": 1.5}
_HALF = re.compile(r"^(bf16x3|bf16f|bf16|fp16|tf32x3|tf32|ieee):(\d+)"
                   r"(?:\+(\d+)x(?:(bf16x3|bf16f|bf16|fp16|tf32x3|tf32|ieee):)?(\d+))?$")


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


def run_schedules(schedules, cases, input_kinds, margin, seeds=1, hi="bf16x3"):
    torch.set_num_threads(1)
    P = dict(loop="tf32", hi=hi, states=hi)
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
                if T == 1:  # no earlier state: the gate has no effect and its exact gradient is zero
                    eg[-1] = 0.0
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


# The backward's products outside the solve, as named here, with the kernel lines they emulate and their dot
# shapes (m, k, n) per chunk for BC tokens, head dim D (the bwd_states ones per chunk and column block BN = D).
GRAD_PRODUCTS = {
    # _bwd_solve_kernel phase 1 (read-out gradients)
    "dOV": ("dOV = dot(dO, V^T) * M", "CDC"),
    "dQp_k": ("dQp = scale * (dot(dOV, K) + ...)", "CCD"),
    "dQp_s": ("dQp = ... + eG * dot(dO, Sp^T)", "CDD"),
    "QK": ("QK = dot(Qp, K^T) * M", "CDC"),
    "dV": ("dv store: dot(QK^T, dO)", "CCD"),
    "dKg": ("dKg = scale * dot(dOV^T, Qp)", "CCD"),
    "Wg": ("Wg = scale * dot((Qp eG)^T, dO)", "DCD"),
    # phase 3 (covariance / ridge gradients)
    "XK": ("XK = dot(X, K^T) * M", "CDC"),
    "QbK": ("QbK = dot(Qb, K^T) * M", "CDC"),
    "HX_h": ("HX = eG * dot(X, Hp) + ...", "CDD"),
    "HX_k": ("HX = ... + dot(XK, K)", "CCD"),
    "Wc": ("Wc = dot(M^T, M cr)", "CCC"),
    "KK": ("KK = dot(K, K^T) (phase 3)", "CDC"),
    "RK_xq": ("RK = -0.5 (dot(XK^T, Qb) + ...)", "CCD"),
    "RK_qx": ("RK = -0.5 (... + dot(QbK^T, X))", "CCD"),
    "RK_h": ("RK = ... + e * dot(K, Hp)", "CDD"),
    "RK_w": ("RK = ... + dot(Wc * KK, K)", "CCD"),
    "U_xq": ("U = -0.5 (dot((X eG)^T, Qb) + ...)", "DCD"),
    # since commit 4e5427f the kernel forms this one as the transpose of U_xq (U = -(P + P^T) / 2), one product
    # instead of two: the emulation keeps both, so its cost column over-counts U_qx's share
    "U_qx": ("U = -0.5 (... + dot((Qb eG)^T, X))", "DCD"),
    "U_k": ("U = ... + dot((K e)^T, K)", "DCD"),
    # _bwd_states_kernel (PREC = prec_states there, not PREC_GRAD)
    "st_RK": ("bwd_states RK = w * dot(K, R)", "CDD"),
    "st_dKg": ("bwd_states dKg = w * dot(V, dS_rows^T)", "CDD"),
    "st_dV": ("bwd_states dV = w * dot(K, dS_cols)", "CDD"),
}
# The forward's products outside the Chebyshev steps (_fwd_solve_kernel's ||H_t||_F and read-out, PREC_HI
# there; _fwd_states_kernel's H_p / S_p scan, run in the forward and again in the backward, PREC_HI too),
# and the refinement residuals r = b - A x (3 A-applications CDC + CDD + CCD each; PREC_HI in both solves).
FWD_PRODUCTS = {
    "fro_kHk": ("kHk = sum(dot(K, Hp) * K, 1)", "CDD"),
    "fro_KK": ("KK = dot(K, K^T) (||H||_F)", "CDC"),
    "fro_MKK": ("dot(M, KK * KK)", "CCC"),
    "ro_QK": ("QK = dot(Qp, K^T) * M", "CDC"),
    "ro_S": ("O = scale (eG * dot(Qp, Sp) + ...)", "CDD"),
    "ro_V": ("O = scale (... + dot(QK, V))", "CCD"),
    "fst_K": ("fwd_states Hk += dot(Kw^T, Kn) (x2: forward + backward)", "DCD"),
    "fst_V": ("fwd_states Sv += dot(Kw^T, Vn) (x2: forward + backward)", "DCD"),
    "res_f": ("forward solve residual b - A x (per round)", "A"),
    "res_b": ("backward solve residual b - A x (per round)", "A"),
}
PRODUCTS = {**GRAD_PRODUCTS, **FWD_PRODUCTS}
GROUPS = {
    "phase1": ["dOV", "dQp_k", "dQp_s", "QK", "dV", "dKg", "Wg"],
    "phase3": ["XK", "QbK", "HX_h", "HX_k", "Wc", "KK", "RK_xq", "RK_qx", "RK_h", "RK_w", "U_xq", "U_qx", "U_k"],
    "states": ["st_RK", "st_dKg", "st_dV"],
}
GROUPS["solve_kernel"] = GROUPS["phase1"] + GROUPS["phase3"]
GROUPS["all"] = GROUPS["solve_kernel"] + GROUPS["states"]
GROUPS["residual"] = ["res_f", "res_b"]
GROUPS["fwd"] = ["fro_kHk", "fro_KK", "fro_MKK", "ro_QK", "ro_S", "ro_V"]
GROUPS["fwd_states"] = ["fst_K", "fst_V"]
GROUPS["bwd_states"] = GROUPS["states"]
GROUPS["scans"] = GROUPS["fwd_states"] + GROUPS["states"]
# the kernels' knobs (kernels/gka_function.py): PREC_HI = residuals + forward read-out / norm (hi);
# PREC_LO = four backward products (lo); PREC_GRAD = the other 16 (grad); PREC_STATES = both state scans (scans)
GROUPS["lo"] = ["dV", "KK", "RK_h", "U_k"]
GROUPS["grad"] = [n for n in GROUPS["solve_kernel"] if n not in GROUPS["lo"]]
GROUPS["hi"] = GROUPS["residual"] + GROUPS["fwd"]
DEFAULT_SCHEDULE = "bf16:15+3xbf16:10/bf16:15+2xbf16:15"


def product_flops(name, BC=16, D=64):
    shp = PRODUCTS[name][1]
    if shp == "A":  # one application of A: X K^T (CDC), X Hp (CDD), XK K (CCD)
        return 2 * (BC * D * BC + BC * D * D + BC * BC * D)
    m_, k_, n_ = ({"C": BC, "D": D}[c] for c in shp)
    return 2 * m_ * k_ * n_


def total_cost(GP, schedule=None, BC=16, D=64):
    """Dot cost of one forward + backward per chunk, head and direction in tf32-dot FLOP units (tf32x3 3,
    bf16x3 1.5, tf32 1, bf16 0.5): {part: cost} with parts solve (Chebyshev steps), residual, fwd,
    fwd_states (counted twice: the backward recomputes the states), solve_kernel (the 20), bwd_states."""
    sched = parse_schedule(schedule or DEFAULT_SCHEDULE)
    c = lambda n: product_flops(n, BC, D) * COST[GP.get(n, "tf32x3")]  # noqa: E731
    A = product_flops("res_f", BC, D)
    out = {"solve": sum(A * (COST[p1] * n1 + R * COST[p2] * n2) for p1, n1, R, p2, n2 in sched),
           "residual": sched[0][2] * c("res_f") + sched[1][2] * c("res_b")}
    for part, k in (("fwd", 1), ("fwd_states", 2), ("solve_kernel", 1), ("bwd_states", 1)):
        out[part] = k * sum(c(n) for n in GROUPS[part])
    return out


def parse_grad_prec(text):
    """"dV=tf32,Wg=tf32,phase3=bf16" -> {product: precision}; groups expand, later items win; "" -> {}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, prec = item.partition("=")
        if prec not in COST:
            raise ValueError(f"bad precision in {item!r}")
        names = GROUPS.get(name, [name])
        for n in names:
            if n not in PRODUCTS:
                raise ValueError(f"unknown product {n!r}; products: {', '.join(PRODUCTS)}; groups: {', '.join(GROUPS)}")
            out[n] = prec
    return out


def dot_cost(GP, names=None):
    """Cost of the named products (default: the bwd_solve kernel's) in tf32-dot units, and the tf32x3 cost."""
    names = names or GROUPS["solve_kernel"]
    c = sum(product_flops(n) * COST[GP.get(n, "tf32x3")] for n in names)
    return c, sum(product_flops(n) * COST["tf32x3"] for n in names)


def run_grad(specs, cases, input_kinds, seeds, schedule, chunk, sweep=False):
    """Gradient errors per --grad-prec spec (worst over cases and seeds) against the float64 reference."""
    torch.set_num_threads(1)
    P = dict(loop="tf32", hi="tf32x3", states="tf32x3")
    sc = parse_schedule(schedule)
    sweep = "tf32" if sweep is True else sweep  # precision of the one-product-at-a-time rows
    specs = list(specs) + ([f"{n}={sweep}" for n in PRODUCTS] if sweep else [])
    names = ["o", "dq", "dk", "dv", "dalpha", "dg"]
    print(f"schedule {schedule}, chunk {chunk}, cases {' '.join(f'{T}:{gs}' for T, gs in cases)}, {seeds} seed(s)")
    print("(increase: the largest error rise over the first spec's, same case, any output; fwd+bwd dot cost:"
          " all dots of one forward + backward relative to all-tf32x3 outside the Chebyshev steps, see total_cost)")
    print("| inputs | --grad-prec | " + " | ".join(names) + " | worst grad | increase | bwd_solve dot cost | fwd+bwd dot cost |")
    print("|---|---|" + "---|" * len(names) + "---|---|---|---|")
    base = sum(total_cost({}, schedule).values())
    for kind in input_kinds:
        refs = []
        for (T, gs), seed in [(c, sd) for c in cases for sd in range(seeds)]:
            ins = inputs(2, T, 2, 64, torch.bfloat16 if kind == "bf16" else torch.float32, gs, seed=seed)
            do = torch.randn(2, T, 2, 64, generator=torch.Generator().manual_seed(1 + 1000 * seed))
            d = [t.double().requires_grad_() for t in ins]
            ref = gka_scan_reference(*d)
            refs.append((ins, do, ref.detach(), torch.autograd.grad(ref, d, do.double())))
        rel = lambda x, y: ((x.double() - y).norm() / y.norm().clamp_min(1e-3)).item()  # noqa: E731
        first = None
        for spec in specs:
            GP = parse_grad_prec(spec)
            worst = [0.0] * len(names)
            per_case = []
            for ins, do, ref, gref in refs:
                o, gr = kernels(*ins, do, P, C=chunk, sched=sc, GP=GP)
                errs = [rel(o, ref)] + [rel(x, y) for x, y in zip(gr, gref)]
                per_case.append(errs)
                worst = [max(a_, b_) for a_, b_ in zip(worst, errs)]
            first = first or per_case
            inc = max(e - e0 for pc, pc0 in zip(per_case, first) for e, e0 in zip(pc, pc0))
            c, c3 = dot_cost(GP)
            tot = sum(total_cost(GP, schedule).values())
            cells = " | ".join(f"{e:.1e}" for e in worst)
            print(f"| {kind} | {spec or '(default)'} | {cells} | {max(worst[1:]):.1e} | {inc:.1e} | {c / c3:.3f} "
                  f"| {tot / base:.3f} |", flush=True)


def print_products(GP=None):
    GP = GP or {}
    c, c3 = dot_cost(GP)
    print("| product | kernel line | dot (m x k x n) | FLOPs per chunk (BC=16, D=64) | share of bwd_solve non-solve |")
    print("|---|---|---|---|---|")
    for n, (line, shp) in GRAD_PRODUCTS.items():
        share = f"{product_flops(n) / (c3 / 3):.3f}" if n in GROUPS["solve_kernel"] else "(bwd_states)"
        dims = " x ".join({"C": "16", "D": "64"}[ch] for ch in shp)
        print(f"| {n} | `{line}` | {dims} | {product_flops(n)} | {share} |")
    print(f"\nwith {GP}: bwd_solve non-solve dot cost {c / c3:.3f} of all-tf32x3")
    parts = total_cost(GP)
    tot = sum(parts.values())
    print(f"fwd+bwd dot cost per chunk/head/direction, schedule {DEFAULT_SCHEDULE}, tf32-dot FLOP units: "
          + ", ".join(f"{k} {v / 1e6:.2f}M ({v / tot:.1%})" for k, v in parts.items()) + f"; total {tot / 1e6:.2f}M")


def parse_cases(items):
    """["197:0.5", "577:w"] -> [(197, 0.5), (577, "w")] ("w": the benchmark's weak gates, see `inputs`)."""
    return [(int(T), g if g == "w" else float(g)) for T, g in (c.split(":") for c in items)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", nargs="+", help="solve schedules FWD/BWD (see module docstring)")
    ap.add_argument("--cases", nargs="+", default=["1:0.5", "33:0.5", "197:0.5", "197:0.02"], help="T:gscale (gscale 'w': weak gates -A dt as in bench_gka_core.py)")
    ap.add_argument("--inputs", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--margin", type=float, default=3.0)
    ap.add_argument("--hi", default="bf16x3", choices=["bf16x3", "tf32x3", "ieee"],
                    help="precision of the residuals, states, read-out and gradient products in --schedules rows "
                         "(the kernels' default: bf16x3)")
    ap.add_argument("--seeds", type=int, default=1, help="input seeds per case (worst is reported)")
    ap.add_argument("--grad-prec", nargs="+", metavar="SPEC",
                    help="backward product precisions, one table row per SPEC, e.g. 'dV=tf32,Wg=tf32' or "
                         "'phase1=tf32' ('' = default: tf32x3 everywhere); see GRAD_PRODUCTS / GROUPS")
    ap.add_argument("--grad-sweep", nargs="?", const="tf32", default=None, metavar="PREC",
                    help="also one row per product (PRODUCTS) set alone to PREC (default tf32)")
    ap.add_argument("--schedule", default=DEFAULT_SCHEDULE, help="solve schedule for --grad-prec rows")
    ap.add_argument("--chunk", type=int, default=16, help="chunk size for --grad-prec rows (kernel BC)")
    ap.add_argument("--products", action="store_true", help="list the product names, shapes and FLOP shares")
    args = ap.parse_args()
    if args.products:
        return print_products()
    if args.grad_prec is not None or args.grad_sweep:
        cases = parse_cases(args.cases)
        kinds = ["fp32", "bf16"] if args.inputs == "both" else [args.inputs]
        return run_grad(args.grad_prec or [], cases, kinds, args.seeds, args.schedule, args.chunk, args.grad_sweep)
    if args.schedules:
        cases = parse_cases(args.cases)
        kinds = ["fp32", "bf16"] if args.inputs == "both" else [args.inputs]
        return run_schedules(args.schedules, cases, kinds, args.margin, args.seeds, args.hi)
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
