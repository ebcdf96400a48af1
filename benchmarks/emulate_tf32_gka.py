"""CPU emulation of the Triton GKA kernels' arithmetic with tf32 operand rounding (docs/kernels.md).

    python benchmarks/emulate_tf32_gka.py

`kernels()` is a torch port of kernels/gka_chunk.py for one scan direction (forward and the implicit
backward, same chunked formulas), where every product goes through `mm(a, b, prec)`: "ieee" (fp32),
"tf32" (both operands rounded to 10 mantissa bits, round-to-nearest) or "tf32x3" (hi*hi + hi*lo + lo*hi).
It prints relative errors of the output and of every gradient against autograd through the float64
reference (exact solve) for the precision schemes of run 1 and of the current kernels. Predictions for
the GPU, which `tl.dot(input_precision=...)` makes there; the interpreter computes every dot in fp32.
"""
import torch

from gka_vision.ops import gka_chunked as m
from gka_vision.ops.gka_reference import gka_scan_reference


def tf32(x):
    """Round fp32 to tf32 (10 mantissa bits), to nearest, ties away from zero (cvt.rna.tf32.f32)."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


def mm(a, b, prec):
    if prec == "ieee":
        return a @ b
    if prec == "tf32":
        return tf32(a) @ tf32(b)
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

def kernels(q, k, v, alpha, g, do, P, C=32, n1=20, n2=20, n2b=30, n1b=None, a_r=0.02):
    """P: dict of precisions: loop, hi, states. Returns o, (dq, dk, dv, dalpha, dg)."""
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
    def cheb(b, it):
        L = fro + lam; eta = (2 / (L + lam))[..., None]; r24 = (((L - lam) / (L + lam)) ** 2 / 4)[..., None]
        xp = torch.zeros_like(b); x = eta * b; om = torch.full_like(r24, 2.0)
        for _ in range(it):
            om = 1 / (1 - r24 * om)
            x, xp = x - om * eta * (apply(x, P["loop"]) - b) + (om - 1) * (x - xp), x
        return x
    def solve(b, first, ref):  # Chebyshev, then one refinement round with a `hi` residual
        x = cheb(b, first)
        if ref:
            x = x + cheb(b - apply(x, hi), ref)
        return x
    X = solve(Q, n1, n2)
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
    Qb = solve(a * dQp, n1 if n1b is None else n1b, n2b)
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


def main():
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
