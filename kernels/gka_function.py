"""The autograd.Function around the chunked GKA kernels, and the two public entry points.

    gka_scan_triton(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False)
    gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                                  sequential_backward=False)

Same contract as gka_vision.ops.gka_scan (GKA.md sections 1-5). The bidirectional op runs both scan
directions in one launch per kernel (direction = a grid axis) and returns 0.5 * (forward + reverse).
"""
import os

import torch
import triton

from .gka_chunk import (FRO2_FLOOR, RIDGE_FLOOR, _bwd_solve_kernel, _bwd_states_kernel, _fwd_solve_kernel,
                        _fwd_states_kernel)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# One config per head dim (no autotune under the interpreter). Tokens per chunk: 16 (H200 run 3,
# docs/benchmarks.md: 7.3 ms fwd+bwd at (128,197,6,64) vs 10.5 ms with 32-token chunks, same errors; BD = 128
# with 64-token chunks needs ~400 KB of shared memory, over the H200's 227 KB). Env GKA_TRITON_CHUNK overrides it.
CHUNK_SIZE = int(os.environ.get("GKA_TRITON_CHUNK", "0")) or None
# Warps per program; None = 4 up to head dim 64, 8 above (two D x D fp32 states need 256 registers per
# thread at 4 warps for BD = 128). Env GKA_TRITON_WARPS overrides it.
NUM_WARPS = int(os.environ.get("GKA_TRITON_WARPS", "0")) or None
# State columns per program of the two chunk-state scans (grid B*H x NDIR x BD/STATE_COLS); None = 32
# (at most BD). Env GKA_TRITON_STATE_COLS overrides it.
STATE_COLS = int(os.environ.get("GKA_TRITON_STATE_COLS", "0")) or None
# Register cap per thread of the two solve kernels (Triton's maxnreg; None = the compiler's choice, 255 at
# head dim 64). Lower caps let more programs share an SM at the price of spills. Env GKA_TRITON_MAXNREG.
MAX_REGS = int(os.environ.get("GKA_TRITON_MAXNREG", "0")) or None
# The two chunk-state scans issue the next chunk's loads (forward scan) / the chunk's state increments
# (backward scan) before the products that do not need them (env GKA_TRITON_PREFETCH=0 turns it off).
PREFETCH = os.environ.get("GKA_TRITON_PREFETCH", "1") == "1"
# Dot precisions (gka_chunk._dot): "bf16", "tf32", "tf32x3" (three tf32 products, fp32-accurate), "ieee", and
# "bf16x3" (three bf16 products of a hi/lo split, ~1e-5 relative error at half the tensor-core cost of tf32x3).
# Default: bf16x3 for every product outside the Chebyshev steps (H200 run 6, docs/benchmarks.md: 7.44 -> 5.18 ms
# fwd+bwd at (128,197,6,64); worst gradient error with fp32 inputs 5e-5 -> 1.7e-3, the gate gradients, target
# 1e-2; bf16 inputs unchanged at 2.4e-3). Set the four GKA_TRITON_PRECISION_* to tf32x3 for fp32-accurate products.
DOT_PRECISIONS = ("bf16", "bf16x3", "tf32", "tf32x3", "ieee")
# PREC_HI: the residuals of the refinement rounds of both solves, ||H_t||_F and the read-out.
# PREC_STATES: the chunk-state scans, forward (H_p / S_p, also recomputed in the backward) and the backward's
# reverse scan (tf32 there costs ~1e-2 in the gate gradient, docs/kernels.md; bf16x3 ~5e-4).
DOT_PRECISION_HI = os.environ.get("GKA_TRITON_PRECISION_HI", "bf16x3")
DOT_PRECISION_STATES = os.environ.get("GKA_TRITON_PRECISION_STATES", "bf16x3")
# PREC_GRAD: the products of the backward solve kernel outside the solve (read-out and covariance gradients).
DOT_PRECISION_GRAD = os.environ.get("GKA_TRITON_PRECISION_GRAD", "bf16x3")
# PREC_LO: four backward products that the CPU emulation found harmless in tf32 (docs/kernels.md). On the
# H200 (run 5, docs/benchmarks.md) tf32 there saved 5 % (7.64 -> 7.24 ms) but raised the fp32-input gate
# gradient error from 5e-5 to 6.4e-3 at T = 577 (tf32 truncates its operands), hence bf16x3.
DOT_PRECISION_LO = os.environ.get("GKA_TRITON_PRECISION_LO", "bf16x3")
# Solve schedule "P1:n1+RxP2:n2" for the forward solve x = A^-1 q, then "/" and the same for the backward
# solve qbar = A^-1 xbar: n1 Chebyshev steps with P1 products ("bf16", "tf32", "ieee"), then R refinement
# rounds (residual with DOT_PRECISION_HI products, then n2 Chebyshev steps with P2 products). n1 is the
# count for num_iter = 30 and moves with num_iter (n1 + num_iter - 30, at least 1). The backward solve
# needs more steps: the key and ridge gradients want qbar about kappa times more accurate than x
# (gka_vision.ops.gka_chunked.BACKWARD_EXTRA_ITERS). Measured / predicted errors: docs/kernels.md.
# Env GKA_TRITON_SCHEDULE overrides it.
# Default: bf16 products in every Chebyshev step, 3 (forward) / 2 (backward) refinement rounds; predicted by
# CPU emulation at 0.63 of the cost of "tf32:20+1xtf32:20/tf32:20+1xtf32:30" with smaller errors.
SOLVE_SCHEDULE = os.environ.get("GKA_TRITON_SCHEDULE", "bf16:15+3xbf16:10/bf16:15+2xbf16:15")


def _parse_schedule(spec):
    """'P1:n1+RxP2:n2/P1:n1+RxP2:n2' -> ((P1, n1, R, P2, n2) forward, (...) backward)."""
    out = []
    try:
        for part in spec.split("/"):
            first, _, rest = part.partition("+")
            p1, n1 = first.split(":")
            if rest:
                r, p2n2 = rest.split("x", 1)
                p2, n2 = p2n2.split(":")
            else:
                r, p2, n2 = 0, p1, 0
            out.append((p1, int(n1), int(r), p2, int(n2)))
    except ValueError:
        out = []
    if len(out) != 2 or any(p not in DOT_PRECISIONS for s in out for p in (s[0], s[3])):
        raise ValueError(f"GKA Triton solve schedule {spec!r}: expected 'P1:n1+RxP2:n2/P1:n1+RxP2:n2' "
                         f"with P in {', '.join(DOT_PRECISIONS)} (e.g. 'tf32:20+1xtf32:20/tf32:20+1xtf32:30')")
    return out


def _solve_launch_opts(warps):
    """Launch options of the solve kernels: num_warps and, if set (not under the interpreter), maxnreg."""
    return dict(num_warps=warps) if MAX_REGS is None or INTERPRET else dict(num_warps=warps, maxnreg=MAX_REGS)


def _config(D):
    """(BD, BC, BN, PREC_HI, PREC_STATES, num_warps) for head dim D."""
    BD = max(16, triton.next_power_of_2(D))
    BC = CHUNK_SIZE or 16
    BN = min(BD, STATE_COLS or 32)
    warps = NUM_WARPS or (4 if BD <= 64 else 8)
    if INTERPRET:
        return BD, BC, BN, "ieee", "ieee", warps
    return BD, BC, BN, DOT_PRECISION_HI, DOT_PRECISION_STATES, warps


def _iters(num_iter, backward):
    """(P_first, first-round steps, rounds, P_refine, steps per round) of the forward or backward solve."""
    p1, n1, r, p2, n2 = _parse_schedule(SOLVE_SCHEDULE)[1 if backward else 0]
    if INTERPRET:  # the interpreter computes every dot in fp32 (and bf16 dots are wrong there)
        p1 = p2 = "ieee"
    return p1, max(n1 + num_iter - 30, 1), r, p2, n2


def _check(q, k, v, alpha, gates):
    if q.dim() != 4:
        raise ValueError(f"gka_scan_triton: q must be [B, T, H, D], got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"gka_scan_triton: {name} shape {tuple(t.shape)} != q shape {tuple(q.shape)}")
    if alpha.shape != q.shape[:3]:
        raise ValueError(f"gka_scan_triton: alpha must be [B, T, H] = {tuple(q.shape[:3])}, got {tuple(alpha.shape)}")
    if gates.shape[1:] != q.shape[:3]:
        raise ValueError(f"gka_scan_triton: gates must be [B, T, H] = {tuple(q.shape[:3])}, "
                         f"got {tuple(gates.shape[1:])}")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"gka_scan_triton: dtype {q.dtype} not supported (fp32, bf16, fp16)")
    if q.shape[-1] > 128:
        raise ValueError(f"gka_scan_triton: head dim {q.shape[-1]} > 128 is not supported")
    if not INTERPRET and q.device.type != "cuda":
        raise ValueError("gka_scan_triton: needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")


def _sum_directions(t):
    """[NDIR, ...] per-direction fp32 results -> their sum (the bidirectional op already scaled by 1/NDIR)."""
    return t[0] if t.shape[0] == 1 else t.sum(0)


def _sizes(q, gates):
    """(B, T, H, D, NDIR, chunks NC, B*H, B*T*H) of one launch set; gates [NDIR, B, T, H]."""
    B, T, H, D = q.shape
    return B, T, H, D, gates.shape[0], triton.cdiv(T, _config(D)[1]), B * H, B * T * H


def _chunk_states(k, v, gates, dir_base):
    """Chunk-start states H_p and S_p, [NDIR, B*H, NC, BD, BD] fp32 each: in the forward, and again in the
    backward (recomputing them is one cheap launch; keeping them would cost 8x the memory of x)."""
    B, T, H, D, ndir, NC, NBH, BTH = _sizes(k, gates)
    BD, BC, BN, _, prec_states, warps = _config(D)
    hk = torch.empty(ndir, NBH, NC, BD, BD, dtype=torch.float32, device=k.device)
    hv = torch.empty_like(hk)
    _fwd_states_kernel[(NBH, ndir, BD // BN)](k, v, gates, hk, hv, T, H, NBH, BTH, NC, dir_base,
                                              D=D, BD=BD, BC=BC, BN=BN, PREC=prec_states, PREFETCH=PREFETCH,
                                              num_warps=warps)
    return hk, hv


class GKATritonFunction(torch.autograd.Function):
    """gates [NDIR, B, T, H] fp32; dir_base 0 (forward first) or 1 (a single reverse scan)."""

    @staticmethod
    def forward(ctx, q, k, v, alpha, gates, dir_base, ridge_ratio, num_iter, scale, sequential_backward=False):
        B, T, H, D, ndir, NC, NBH, BTH = _sizes(q, gates)
        BD, BC, _, prec_hi, _, warps = _config(D)
        p1, n1, rounds, p2, n2 = _iters(num_iter, False)
        q, k, v, alpha = (t.contiguous() for t in (q, k, v, alpha))
        gates = gates.float().contiguous()
        f32 = dict(dtype=torch.float32, device=q.device)
        hk, hv = _chunk_states(k, v, gates, dir_base)
        o = torch.empty(ndir, B, T, H, D, **f32)
        x = torch.empty(ndir, B, T, H, D, **f32)
        fro = torch.empty(ndir, B, T, H, **f32)
        out_scale = 1.0 / ndir
        _fwd_solve_kernel[(NC, NBH, ndir)](q, k, v, alpha, gates, hk, hv, o, x, fro,
                                           T, H, NBH, BTH, NC, dir_base, n1, rounds, n2,
                                           ridge_ratio, RIDGE_FLOOR, FRO2_FLOOR, scale, out_scale,
                                           D=D, BD=BD, BC=BC, PREC_FIRST=p1, PREC=p2, PREC_HI=prec_hi,
                                           **_solve_launch_opts(warps))
        ctx.save_for_backward(q, k, v, alpha, gates, x, fro)
        ctx.opts = (dir_base, ridge_ratio, num_iter, scale, out_scale, sequential_backward)
        return _sum_directions(o).to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, alpha, gates, x, fro = ctx.saved_tensors
        dir_base, ridge_ratio, num_iter, scale, out_scale, sequential = ctx.opts
        do = do.contiguous()
        args = (q, k, v, alpha, do, ridge_ratio, num_iter, scale, out_scale)
        if sequential and gates.shape[0] == 2:
            # one direction after the other: half the transient chunk-state and per-direction gradient buffers
            grads = list(_backward(*args, gates[:1], x[:1], fro[:1], dir_base=0))
            rev = _backward(*args, gates[1:], x[1:], fro[1:], dir_base=1)
            for acc, r in zip(grads[:4], rev[:4]):
                acc += r
            grads[4] = torch.cat([grads[4], rev[4]])
        else:
            grads = _backward(*args, gates, x, fro, dir_base=dir_base)
        dq, dk, dv, da, dg = grads
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), da.to(alpha.dtype), dg,
                None, None, None, None, None)


def _backward(q, k, v, alpha, do, ridge_ratio, num_iter, scale, out_scale, gates, x, fro, dir_base):
    """The backward launches for the directions in `gates` ([NDIR, B, T, H]; the first is dir_base):
    fp32 (dq, dk, dv, dalpha) summed over those directions and dg [NDIR, B, T, H]."""
    B, T, H, D, ndir, NC, NBH, BTH = _sizes(q, gates)
    BD, BC, BN, prec_hi, prec_states, warps = _config(D)
    p1, n1, rounds, p2, n2 = _iters(num_iter, True)
    f32 = dict(dtype=torch.float32, device=q.device)
    # per-direction results, every element written once by the solve kernel (plain stores)
    dq = torch.empty(ndir, B, T, H, D, **f32)
    dk = torch.empty(ndir, B, T, H, D, **f32)
    dv = torch.empty(ndir, B, T, H, D, **f32)
    da = torch.empty(ndir, B, T, H, **f32)
    dG = torch.empty(ndir, B, T, H, **f32)
    dgp = torch.empty(BD // BN, ndir, B, T, H, **f32)
    hk, hv = _chunk_states(k, v, gates, dir_base)
    # U_c / W_c overwrite H_p / S_p slot by slot (each slot belongs to one program): 2 buffers, not 4
    u, w = hk, hv
    _bwd_solve_kernel[(NC, NBH, ndir)](q, k, v, alpha, gates, hk, hv, x, fro, do,
                                       dq, dk, dv, da, dG, u, w,
                                       T, H, NBH, BTH, NC, dir_base, n1, rounds, n2,
                                       ridge_ratio, RIDGE_FLOOR, scale, out_scale,
                                       D=D, BD=BD, BC=BC, PREC_FIRST=p1, PREC=p2, PREC_HI=prec_hi,
                                       PREC_GRAD="ieee" if INTERPRET else DOT_PRECISION_GRAD,
                                       PREC_LO="ieee" if INTERPRET else DOT_PRECISION_LO,
                                       **_solve_launch_opts(warps))
    _bwd_states_kernel[(NBH, ndir, BD // BN)](k, v, gates, u, w, dk, dv, dgp,
                                              T, H, NBH, BTH, NC, dir_base,
                                              D=D, BD=BD, BC=BC, BN=BN, PREC=prec_states, PREFETCH=PREFETCH,
                                              num_warps=warps)
    del hk, hv, u, w  # free the chunk states before the direction sums allocate
    # dL/dG^glob_t (read terms from the solve kernel minus the inter-chunk write terms); g_t enters
    # G^glob of every later position in scan order: reverse cumsum for the forward scan, cumsum over
    # t for the reverse scan. The cumsums run over the last, contiguous dim ([NDIR, B, H, T]): torch's scan over
    # an outer dim took 1.06 of 5.09 ms at (4, 4097, 6, 64) (H200, profile of 2026-11-28 14:29 UTC).
    dGt = (dG - dgp.sum(0)).transpose(2, 3).contiguous()
    dg = torch.stack([dGt[s].cumsum(-1) if dir_base + s == 1 else dGt[s].flip(-1).cumsum(-1).flip(-1)
                      for s in range(ndir)]).transpose(2, 3).contiguous()
    return _sum_directions(dq), _sum_directions(dk), _sum_directions(dv), _sum_directions(da), dg


def _fallback_chunked(*args, **kwargs):
    from gka_vision.ops.gka_chunked import gka_scan_chunked
    return gka_scan_chunked(*args, **kwargs)


def gka_scan_triton(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False):
    """One causal GKA scan on the Triton kernels (reverse=True scans from the last token to the first).

    A separate key-covariance gate gk is not implemented in the kernels; that case runs the torch
    chunked backend.
    """
    if gk is not None:
        return _fallback_chunked(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse)
    gates = g.unsqueeze(0)
    _check(q, k, v, alpha, gates)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return GKATritonFunction.apply(q, k, v, alpha, gates, 1 if reverse else 0, float(ridge_ratio),
                                   int(num_iter), scale)


def gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                                  sequential_backward=False):
    """0.5 * (forward scan with gate g + reverse scan with gate g_rev), both directions in one launch.

    sequential_backward=True runs the backward's launches once per direction instead (the forward is
    unchanged): half the transient memory of the backward (chunk states, per-direction gradients), for
    large images; same results.
    """
    if g.shape != g_rev.shape:
        raise ValueError(f"gka_scan_bidirectional_triton: g {tuple(g.shape)} and g_rev {tuple(g_rev.shape)} differ")
    gates = torch.stack([g.float(), g_rev.float()])
    _check(q, k, v, alpha, gates)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return GKATritonFunction.apply(q, k, v, alpha, gates, 0, float(ridge_ratio), int(num_iter), scale,
                                   bool(sequential_backward))
