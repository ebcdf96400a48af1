"""Triton LayerNorm over the last dim with a chosen output dtype, one launch forward and one backward:

    y = (x - mean(x)) rsqrt(var(x) + eps) weight + bias      per row of C, in fp32, stored in out_dtype

Under CUDA autocast PyTorch runs layer_norm in fp32 and returns fp32; the matmuls and convs after it then each
cast that output to bf16 (one more pass over it per consumer, and one per consumer in the backward for the
gradient's way back). Returning the rounded output directly gives the same values to those consumers without the
fp32 round trip (gka_vision/layers/norm.py holds the PyTorch spec: F.layer_norm, then .to(out_dtype)).

Backward (xh = (x - mean) rstd, g = dy weight): dx = rstd (g - mean(g) - xh mean(g xh)); dweight = sum_rows dy xh,
dbias = sum_rows dy. The backward reloads x and recomputes mean and rstd (nothing is saved but the inputs); each
program walks a strided set of row blocks and keeps its share of dweight / dbias in registers, summed in torch.
Plain pointer arithmetic (no block pointers) so it runs under TRITON_INTERPRET=1.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .host_math import cdiv, next_power_of_2

__all__ = ["layer_norm", "MAX_WIDTH"]

MAX_WIDTH = 16384  # widest row a program holds in registers
_TILE = 4096       # elements per program and row block: BLOCK_R rows of BLOCK_C columns
_BWD_PROGRAMS = 1024  # most backward programs (each accumulates its dweight / dbias share over its row blocks)


@triton.jit
def _tile(x_ptr, rows, cols, M, C, s_x, BLOCK_C: tl.constexpr):
    mask_r = rows < M
    mask = mask_r[:, None] & (cols[None, :] < C)
    x = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return x, mask


@triton.jit
def _normalized(x, mask, C, EPS):
    """(x - mean) rstd per row of an fp32 tile (zero outside the mask), and rstd."""
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / C + EPS)
    return xc * rstd[:, None], rstd


@triton.jit
def _layer_norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, C, s_x, EPS,
                           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    x, mask = _tile(x_ptr, rows, cols, M, C, s_x, BLOCK_C)
    xh, _ = _normalized(x, mask, C, EPS)
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    y = xh * w[None, :] + b[None, :]
    tl.store(y_ptr + rows[:, None] * C + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_bwd_kernel(x_ptr, w_ptr, dy_ptr, dx_ptr, dw_ptr, db_ptr, M, C, s_x, EPS, ROW_BLOCKS,
                           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_C)
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    for blk in range(pid, ROW_BLOCKS, programs):
        rows = tl.arange(0, BLOCK_R).to(tl.int64) + blk * BLOCK_R  # (row indices fit int32; offsets need int64)
        x, mask = _tile(x_ptr, rows, cols, M, C, s_x, BLOCK_C)
        xh, rstd = _normalized(x, mask, C, EPS)
        dy = tl.load(dy_ptr + rows[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        g = dy * w[None, :]
        dx = rstd[:, None] * (g - (tl.sum(g, axis=1) / C)[:, None] - xh * (tl.sum(g * xh, axis=1) / C)[:, None])
        tl.store(dx_ptr + rows[:, None] * C + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * xh, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(dw_ptr + pid * BLOCK_C + cols, dw)
    tl.store(db_ptr + pid * BLOCK_C + cols, db)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x [..., C] as [M, C] with a unit last stride: a view where the strides allow, else one copy."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:  # leading dims not mergeable
        return x.reshape(-1, x.shape[-1])


def _blocks(C: int):
    block_c = next_power_of_2(C)
    return max(1, _TILE // block_c), block_c


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        x2 = _rows(x)
        M, C = x2.shape
        block_r, block_c = _blocks(C)
        y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        if M:
            _layer_norm_fwd_kernel[(cdiv(M, block_r),)](x2, weight, bias, y, M, C, x2.stride(0), eps,
                                                        BLOCK_R=block_r, BLOCK_C=block_c)
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        ctx.bias_dtype = bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        if torch.is_grad_enabled():  # create_graph=True: the backward kernel has no second-order terms
            raise RuntimeError("gka_kernels.layer_norm: the fused kernel has no double backward (create_graph=True); "
                               "use torch.nn.functional.layer_norm for higher-order gradients")
        x, weight = ctx.saved_tensors
        x2 = _rows(x)
        M, C = x2.shape
        block_r, block_c = _blocks(C)
        row_blocks = cdiv(M, block_r)
        programs = max(1, min(row_blocks, _BWD_PROGRAMS))
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        dw = torch.empty(programs, block_c, dtype=torch.float32, device=x.device)
        db = torch.empty(programs, block_c, dtype=torch.float32, device=x.device)
        _layer_norm_bwd_kernel[(programs,)](x2, weight, dy.contiguous(), dx, dw, db, M, C, x2.stride(0), ctx.eps,
                                            row_blocks, BLOCK_R=block_r, BLOCK_C=block_c)
        return dx, dw.sum(0)[:C].to(weight.dtype), db.sum(0)[:C].to(ctx.bias_dtype), None, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
               out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """LayerNorm of x [..., C] over its last dim with weight and bias [C], computed in fp32 and returned in
    out_dtype (x's dtype if None); the gradients come in the inputs' dtypes. C at most MAX_WIDTH."""
    C = x.shape[-1] if x.dim() else 0
    if x.dim() < 1 or weight.shape != (C,) or bias.shape != (C,):
        raise ValueError(f"layer_norm: x must be [..., C] with weight and bias [C]; got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(bias.shape)}")
    if not 0 < C <= MAX_WIDTH:
        raise ValueError(f"layer_norm: the normalized width must be 1..{MAX_WIDTH}, got {C}")
    return _LayerNorm.apply(x, weight, bias, float(eps), out_dtype or x.dtype)
