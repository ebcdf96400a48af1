"""The autograd.Function around the chunked GKA kernels, and the two public entry points.

    gka_scan_triton(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False)
    gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None)

Same contract as gka_vision.ops.gka_scan (GKA.md sections 1-5). The bidirectional op runs both scan
directions in one launch per kernel (direction = last grid axis) and returns 0.5 * (forward + reverse).
"""
import os

import torch
import triton

from .gka_chunk import (FRO2_FLOOR, RIDGE_FLOOR, _bwd_solve_kernel, _bwd_states_kernel, _fwd_solve_kernel,
                        _fwd_states_kernel)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# One config per head dim (no autotune under the interpreter). Tokens per chunk: a power of two >= 16,
# smaller for wide heads so the D x D state and the tiles fit in shared memory (BD = 128 with 64-token
# chunks needs ~400 KB on the H200, over its 227 KB). Env GKA_TRITON_CHUNK overrides it (the CPU tests
# use 16 to cover several chunks at T <= 40).
CHUNK_SIZE = int(os.environ.get("GKA_TRITON_CHUNK", "0")) or None
# tl.dot input precision of the Chebyshev steps ("tf32": fast, ~2e-4 relative per product) and of
# everything else ("tf32x3": three tf32 products, fp32-accurate). Env GKA_TRITON_PRECISION and
# GKA_TRITON_PRECISION_HI override them; the interpreter computes every dot in fp32 anyway.
DOT_PRECISION = os.environ.get("GKA_TRITON_PRECISION", "tf32")
DOT_PRECISION_HI = os.environ.get("GKA_TRITON_PRECISION_HI", "tf32x3")
# Warps per program; None = 4 up to head dim 64, 8 above (two D x D fp32 states need 256 registers per
# thread at 4 warps for BD = 128). Env GKA_TRITON_WARPS overrides it.
NUM_WARPS = int(os.environ.get("GKA_TRITON_WARPS", "0")) or None
# The solve is Chebyshev (num_iter - 10 steps), then one refinement round: r = b - A x with fp32-accurate
# products, x += Chebyshev(r) (REFINE_ITERS steps). Measured by emulating tf32 rounding on CPU
# (docs/kernels.md): forward error 8.5e-3 -> 6.5e-5 at T = 197, 1.2e-1 -> 1.1e-3 at T = 1 (rank-one H).
REFINE_ITERS = 20
# Extra Chebyshev steps of the backward solve qbar = A^-1 xbar, as in the torch backend
# (gka_vision.ops.gka_chunked.BACKWARD_EXTRA_ITERS): the key and ridge gradients need qbar about
# kappa times more accurate than x.
BACKWARD_EXTRA_ITERS = 10


def _config(D):
    """(BD, BC, PREC, PREC_HI, num_warps) for head dim D."""
    BD = max(16, triton.next_power_of_2(D))
    BC = CHUNK_SIZE or (64 if BD <= 32 else 32 if BD <= 64 else 16)
    warps = NUM_WARPS or (4 if BD <= 64 else 8)
    if INTERPRET:
        return BD, BC, "ieee", "ieee", warps
    return BD, BC, DOT_PRECISION, DOT_PRECISION_HI, warps


def _iters(num_iter, backward):
    """(first-round steps, refinement steps) of the solve."""
    first = max(num_iter - 10, 1)
    return first, REFINE_ITERS + (BACKWARD_EXTRA_ITERS if backward else 0)


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


class GKATritonFunction(torch.autograd.Function):
    """gates [NDIR, B, T, H] fp32; dir_base 0 (forward first) or 1 (a single reverse scan)."""

    @staticmethod
    def forward(ctx, q, k, v, alpha, gates, dir_base, ridge_ratio, num_iter, scale):
        B, T, H, D = q.shape
        ndir = gates.shape[0]
        BD, BC, prec, prec_hi, warps = _config(D)
        NC = triton.cdiv(T, BC)
        NBH, BTH = B * H, B * T * H
        q, k, v, alpha = (t.contiguous() for t in (q, k, v, alpha))
        gates = gates.float().contiguous()
        f32 = dict(dtype=torch.float32, device=q.device)
        hk = torch.empty(ndir, NBH, NC, BD, BD, **f32)
        hv = torch.empty(ndir, NBH, NC, BD, BD, **f32)
        o = (torch.zeros if ndir > 1 else torch.empty)(B, T, H, D, **f32)
        x = torch.empty(ndir, B, T, H, D, **f32)
        fro = torch.empty(ndir, B, T, H, **f32)
        out_scale = 1.0 / ndir
        _fwd_states_kernel[(NBH, ndir)](k, v, gates, hk, hv, T, H, NBH, BTH, NC, dir_base,
                                        D=D, BD=BD, BC=BC, PREC=prec_hi, num_warps=warps)
        _fwd_solve_kernel[(NC, NBH, ndir)](q, k, v, alpha, gates, hk, hv, o, x, fro,
                                           T, H, NBH, BTH, NC, dir_base, *_iters(num_iter, False),
                                           ridge_ratio, RIDGE_FLOOR, FRO2_FLOOR, scale, out_scale,
                                           D=D, BD=BD, BC=BC, PREC=prec, PREC_HI=prec_hi,
                                           ACCUMULATE=ndir > 1,
                                           num_warps=warps)
        ctx.save_for_backward(q, k, v, alpha, gates, hk, hv, x, fro)
        ctx.opts = (dir_base, ridge_ratio, num_iter, scale, out_scale)
        return o.to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, alpha, gates, hk, hv, x, fro = ctx.saved_tensors
        dir_base, ridge_ratio, num_iter, scale, out_scale = ctx.opts
        B, T, H, D = q.shape
        ndir = gates.shape[0]
        BD, BC, prec, prec_hi, warps = _config(D)
        NC = triton.cdiv(T, BC)
        NBH, BTH = B * H, B * T * H
        do = do.contiguous()
        f32 = dict(dtype=torch.float32, device=q.device)
        dq = torch.zeros(B, T, H, D, **f32)
        dk = torch.zeros(B, T, H, D, **f32)
        dv = torch.zeros(B, T, H, D, **f32)
        da = torch.zeros(B, T, H, **f32)
        dG = torch.empty(ndir, B, T, H, **f32)
        dg = torch.empty(ndir, B, T, H, **f32)
        u = torch.empty_like(hk)
        w = torch.empty_like(hv)
        _bwd_solve_kernel[(NC, NBH, ndir)](q, k, v, alpha, gates, hk, hv, x, fro, do,
                                           dq, dk, dv, da, dG, u, w,
                                           T, H, NBH, BTH, NC, dir_base, *_iters(num_iter, True),
                                           ridge_ratio, RIDGE_FLOOR, scale, out_scale,
                                           D=D, BD=BD, BC=BC, PREC=prec, PREC_HI=prec_hi,
                                           num_warps=warps)
        _bwd_states_kernel[(NBH, ndir)](k, v, gates, u, w, dk, dv, dG, dg,
                                        T, H, NBH, BTH, NC, dir_base,
                                        D=D, BD=BD, BC=BC, PREC=prec_hi, num_warps=warps)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), da.to(alpha.dtype), dg,
                None, None, None, None)


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
    dg = GKATritonFunction.apply(q, k, v, alpha, gates, 1 if reverse else 0, float(ridge_ratio),
                                 int(num_iter), scale)
    return dg


def gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None):
    """0.5 * (forward scan with gate g + reverse scan with gate g_rev), both directions in one launch."""
    if g.shape != g_rev.shape:
        raise ValueError(f"gka_scan_bidirectional_triton: g {tuple(g.shape)} and g_rev {tuple(g_rev.shape)} differ")
    gates = torch.stack([g.float(), g_rev.float()])
    _check(q, k, v, alpha, gates)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return GKATritonFunction.apply(q, k, v, alpha, gates, 0, float(ridge_ratio), int(num_iter), scale)
