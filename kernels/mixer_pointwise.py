"""Triton kernels for the per-token work of the GKA mixers around the scan, one launch per forward and one per
backward (gka_vision/layers/mixer_parts.py and norm.py hold the PyTorch spec of each):

    qk_norm_beta(q, k, v, beta_logit, qk_dtype)   qn = q / max(|q|, eps),  b = sigmoid(beta_logit),
                                                  kn = b k / max(|k|, eps),  vb = b v          per row of D
    gated_rms_norm(x, weight, gate, eps, dtype)   y = x rsqrt(mean(x^2) + eps) weight silu(gate)   per row of D

q, k, v, x and gate are [P, H, D] views of any strides (P rows of H heads: the mixers' [B * N, nh, D] views of
their projections, without a copy); beta_logit is [P, H]. Both compute in fp32 and save only their inputs: the
backward recomputes the norms (the same memory as recomputing the PyTorch chain, without its launches).

Backward of a row y = x / r, r = max(|x|, eps):  dx = (dy - y (y . dy)) / r  if |x| > eps, else dy / eps.
Backward of y = (x s) w silu(g), s = rsqrt(mean(x^2) + eps), xh = x s:
    dx = s (dxh - xh mean(dxh xh)),  dxh = dy w silu(g);   dw = sum_rows dy xh silu(g);
    dg = dy xh w sig(g) (1 + g (1 - sig(g))).
Plain pointer arithmetic (no block pointers) so they run under TRITON_INTERPRET=1.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .host_math import cdiv, next_power_of_2

__all__ = ["qk_norm_beta", "gated_rms_norm", "NORM_EPS"]

NORM_EPS = 1e-6  # F.normalize's eps of the q/k normalisation
_BLOCK_ROWS = 32  # rows (of D) per program


@triton.jit
def _rows(pid, H, P, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, D):
    """This program's rows r = p * H + h as (p, h) in int64, the row mask, the column offsets and the tile mask."""
    r = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    p = r // H
    h = r - p * H
    cols = tl.arange(0, BLOCK_D)
    mask_r = p < P
    return r, p, h, cols, mask_r, mask_r[:, None] & (cols[None, :] < D)


@triton.jit
def _load_tile(ptr, p, h, cols, mask, s_p, s_h):
    return tl.load(ptr + (p * s_p + h * s_h)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _sigmoid_rounded(ptr, p, h, mask_r, s_p, s_h):
    """sigmoid of the logits, rounded to their dtype as the PyTorch chain (torch.sigmoid of a bf16 tensor) does."""
    logit = tl.load(ptr + p * s_p + h * s_h, mask=mask_r, other=0.0).to(tl.float32)
    return tl.sigmoid(logit).to(ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _qk_norm_beta_fwd_kernel(q_ptr, k_ptr, v_ptr, b_ptr, qo_ptr, ko_ptr, vo_ptr, P, H, D,
                             s_qp, s_qh, s_kp, s_kh, s_vp, s_vh, s_bp, s_bh, EPS,
                             BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    r, p, h, cols, mask_r, mask = _rows(tl.program_id(0), H, P, BLOCK_R, BLOCK_D, D)
    beta = _sigmoid_rounded(b_ptr, p, h, mask_r, s_bp, s_bh)
    out = r[:, None] * D + cols[None, :]
    q = _load_tile(q_ptr, p, h, cols, mask, s_qp, s_qh)
    q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), EPS)[:, None]
    tl.store(qo_ptr + out, q.to(qo_ptr.dtype.element_ty), mask=mask)
    k = _load_tile(k_ptr, p, h, cols, mask, s_kp, s_kh)
    k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), EPS)[:, None]
    # the chain rounds kn to its dtype before the beta product (F.normalize, then * beta)
    k = k.to(ko_ptr.dtype.element_ty).to(tl.float32) * beta[:, None]
    tl.store(ko_ptr + out, k.to(ko_ptr.dtype.element_ty), mask=mask)
    v = _load_tile(v_ptr, p, h, cols, mask, s_vp, s_vh)
    tl.store(vo_ptr + out, (v * beta[:, None]).to(vo_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normalize_bwd(x, dy, EPS):
    """The gradient of y = x / max(|x|, eps) per row (fp32 tiles), and y."""
    nrm = tl.sqrt(tl.sum(x * x, axis=1))
    r = tl.maximum(nrm, EPS)
    y = x / r[:, None]
    proj = tl.where(nrm > EPS, tl.sum(y * dy, axis=1), 0.0)
    return (dy - y * proj[:, None]) / r[:, None], y


@triton.jit
def _qk_norm_beta_bwd_kernel(q_ptr, k_ptr, v_ptr, b_ptr, dqo_ptr, dko_ptr, dvo_ptr, dq_ptr, dk_ptr, dv_ptr, db_ptr,
                             P, H, D, s_qp, s_qh, s_kp, s_kh, s_vp, s_vh, s_bp, s_bh, EPS,
                             BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    r, p, h, cols, mask_r, mask = _rows(tl.program_id(0), H, P, BLOCK_R, BLOCK_D, D)
    beta = _sigmoid_rounded(b_ptr, p, h, mask_r, s_bp, s_bh)
    out = r[:, None] * D + cols[None, :]
    q = _load_tile(q_ptr, p, h, cols, mask, s_qp, s_qh)
    dqo = tl.load(dqo_ptr + out, mask=mask, other=0.0).to(tl.float32)
    dq, _ = _normalize_bwd(q, dqo, EPS)
    tl.store(dq_ptr + out, dq.to(dq_ptr.dtype.element_ty), mask=mask)
    k = _load_tile(k_ptr, p, h, cols, mask, s_kp, s_kh)
    dko = tl.load(dko_ptr + out, mask=mask, other=0.0).to(tl.float32)
    dk, kn = _normalize_bwd(k, dko * beta[:, None], EPS)
    tl.store(dk_ptr + out, dk.to(dk_ptr.dtype.element_ty), mask=mask)
    v = _load_tile(v_ptr, p, h, cols, mask, s_vp, s_vh)
    dvo = tl.load(dvo_ptr + out, mask=mask, other=0.0).to(tl.float32)
    tl.store(dv_ptr + out, (dvo * beta[:, None]).to(dv_ptr.dtype.element_ty), mask=mask)
    dbeta = tl.sum(dko * kn + dvo * v, axis=1)
    tl.store(db_ptr + r, (dbeta * beta * (1.0 - beta)).to(db_ptr.dtype.element_ty), mask=mask_r)


@triton.jit
def _gated_rms_norm_fwd_kernel(x_ptr, w_ptr, g_ptr, y_ptr, P, H, D, s_xp, s_xh, s_gp, s_gh, EPS,
                               HAS_GATE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    r, p, h, cols, mask_r, mask = _rows(tl.program_id(0), H, P, BLOCK_R, BLOCK_D, D)
    x = _load_tile(x_ptr, p, h, cols, mask, s_xp, s_xh)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    y = x * tl.rsqrt(tl.sum(x * x, axis=1) / D + EPS)[:, None] * w[None, :]
    if HAS_GATE:
        g = _load_tile(g_ptr, p, h, cols, mask, s_gp, s_gh)
        y = y * g * tl.sigmoid(g)
    tl.store(y_ptr + r[:, None] * D + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_rms_norm_bwd_kernel(x_ptr, w_ptr, g_ptr, dy_ptr, dx_ptr, dg_ptr, dw_ptr, P, H, D, s_xp, s_xh, s_gp, s_gh,
                               EPS, HAS_GATE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    r, p, h, cols, mask_r, mask = _rows(pid, H, P, BLOCK_R, BLOCK_D, D)
    out = r[:, None] * D + cols[None, :]
    x = _load_tile(x_ptr, p, h, cols, mask, s_xp, s_xh)
    dy = tl.load(dy_ptr + out, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    s = tl.rsqrt(tl.sum(x * x, axis=1) / D + EPS)
    xh = x * s[:, None]
    if HAS_GATE:
        g = _load_tile(g_ptr, p, h, cols, mask, s_gp, s_gh)
        sig = tl.sigmoid(g)
        silu = g * sig
        tl.store(dg_ptr + out, (dy * xh * w[None, :] * sig * (1.0 + g * (1.0 - sig))).to(dg_ptr.dtype.element_ty),
                 mask=mask)
        dy = dy * silu
    dxh = dy * w[None, :]
    dx = s[:, None] * (dxh - xh * (tl.sum(dxh * xh, axis=1) / D)[:, None])
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid * BLOCK_D + cols, tl.sum(dy * xh, axis=0))  # this program's share of dweight (fp32)


def _rows_view(t: torch.Tensor, tile: bool = True) -> torch.Tensor:
    """t [..., H, D] as [P, H, D] with a unit last stride (tile), or the logits [..., H] as [P, H]; a view where the
    strides allow, else one copy."""
    if tile and t.stride(-1) != 1:
        t = t.contiguous()
    tail = t.shape[-2:] if tile else t.shape[-1:]
    try:
        return t.view(-1, *tail)
    except RuntimeError:  # leading dims not mergeable
        return t.reshape(-1, *tail)


def _refuse_double_backward():
    """The backward kernels are not differentiable: under create_graph=True (grad mode on inside a backward) their
    second-order terms would silently be missing, so refuse."""
    if torch.is_grad_enabled():
        raise RuntimeError("gka_kernels.mixer_pointwise: the fused kernels have no double backward (create_graph=True); "
                           "build the model with fuse_pointwise=False for higher-order gradients")


def _grid(rows: int):
    return (cdiv(rows, _BLOCK_ROWS),)


class _QKNormBeta(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta_logit, qk_dtype):
        shape = q.shape
        q3, k3, v3 = _rows_view(q), _rows_view(k), _rows_view(v)
        b2 = _rows_view(beta_logit, tile=False)
        P, H, D = q3.shape
        vo_dtype = torch.promote_types(v.dtype, beta_logit.dtype)
        qo = torch.empty(shape, dtype=qk_dtype, device=q.device)
        ko = torch.empty(shape, dtype=torch.promote_types(qk_dtype, beta_logit.dtype), device=q.device)
        vo = torch.empty(shape, dtype=vo_dtype, device=q.device)
        _qk_norm_beta_fwd_kernel[_grid(P * H)](
            q3, k3, v3, b2, qo, ko, vo, P, H, D, q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
            v3.stride(0), v3.stride(1), b2.stride(0), b2.stride(1), NORM_EPS,
            BLOCK_R=_BLOCK_ROWS, BLOCK_D=next_power_of_2(D))
        ctx.save_for_backward(q, k, v, beta_logit)
        return qo, ko, vo

    @staticmethod
    def backward(ctx, dqo, dko, dvo):
        _refuse_double_backward()
        q, k, v, beta_logit = ctx.saved_tensors
        q3, k3, v3 = _rows_view(q), _rows_view(k), _rows_view(v)
        b2 = _rows_view(beta_logit, tile=False)
        P, H, D = q3.shape
        dqo, dko, dvo = (torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None else g.contiguous()
                         for g, t in ((dqo, q), (dko, k), (dvo, v)))
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=q.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=q.device)
        db = torch.empty(beta_logit.shape, dtype=beta_logit.dtype, device=q.device)
        _qk_norm_beta_bwd_kernel[_grid(P * H)](
            q3, k3, v3, b2, dqo, dko, dvo, dq, dk, dv, db, P, H, D, q3.stride(0), q3.stride(1), k3.stride(0),
            k3.stride(1), v3.stride(0), v3.stride(1), b2.stride(0), b2.stride(1), NORM_EPS,
            BLOCK_R=_BLOCK_ROWS, BLOCK_D=next_power_of_2(D))
        return dq, dk, dv, db, None


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, gate, eps, out_dtype):
        x3 = _rows_view(x)
        g3 = x3 if gate is None else _rows_view(gate)
        P, H, D = x3.shape
        y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        _gated_rms_norm_fwd_kernel[_grid(P * H)](
            x3, weight, g3, y, P, H, D, x3.stride(0), x3.stride(1), g3.stride(0), g3.stride(1), eps,
            HAS_GATE=gate is not None, BLOCK_R=_BLOCK_ROWS, BLOCK_D=next_power_of_2(D))
        ctx.save_for_backward(x, weight, gate)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, dy):
        _refuse_double_backward()
        x, weight, gate = ctx.saved_tensors
        x3 = _rows_view(x)
        g3 = x3 if gate is None else _rows_view(gate)
        P, H, D = x3.shape
        grid = _grid(P * H)
        block_d = next_power_of_2(D)
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        dg = dx if gate is None else torch.empty(gate.shape, dtype=gate.dtype, device=x.device)
        dw = torch.empty(grid[0], block_d, dtype=torch.float32, device=x.device)
        _gated_rms_norm_bwd_kernel[grid](
            x3, weight, g3, dy.contiguous(), dx, dg, dw, P, H, D, x3.stride(0), x3.stride(1), g3.stride(0),
            g3.stride(1), ctx.eps, HAS_GATE=gate is not None, BLOCK_R=_BLOCK_ROWS, BLOCK_D=block_d)
        dweight = dw.sum(0)[:D].to(weight.dtype)
        return dx, dweight, None if gate is None else dg, None, None


def qk_norm_beta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta_logit: torch.Tensor,
                 qk_dtype: torch.dtype):
    """(q / max(|q|, eps), b k / max(|k|, eps), b v) with b = sigmoid(beta_logit), per head row of D.

    q, k, v [..., H, D] of one shape (any strides with a unit last stride), beta_logit [..., H]. qn is returned in
    qk_dtype, kn in qk_dtype promoted with the logits' dtype, vb in v's promoted with it (the dtypes of the PyTorch
    chain F.normalize, * sigmoid(beta)); the gradients come in the inputs' dtypes."""
    if q.dim() < 2 or k.shape != q.shape or v.shape != q.shape or beta_logit.shape != q.shape[:-1]:
        raise ValueError(f"qk_norm_beta: q, k, v must share a shape [..., H, D] and beta_logit be [..., H]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}, {tuple(beta_logit.shape)}")
    return _QKNormBeta.apply(q, k, v, beta_logit, qk_dtype)


def gated_rms_norm(x: torch.Tensor, weight: torch.Tensor, gate: Optional[torch.Tensor] = None,
                   eps: float = 1e-6, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """x rsqrt(mean(x^2) + eps) weight silu(gate) over the last dim in fp32, returned in out_dtype (x's if None).

    x [..., H, D] (any strides with a unit last stride), weight [D], gate None or x's shape."""
    if x.dim() < 2 or weight.shape != x.shape[-1:] or (gate is not None and gate.shape != x.shape):
        raise ValueError(f"gated_rms_norm: x must be [..., H, D], weight [D] and gate x's shape; got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)}, {None if gate is None else tuple(gate.shape)}")
    return _GatedRMSNorm.apply(x, weight, gate, float(eps), out_dtype or x.dtype)
