"""Triton kernels for the Mamba-1 selective scan core (no D skip, no z gate: those stay in PyTorch).

Computes, per batch b, channel d, state n, with fp32 state (gka_vision/ops/selective_scan.py is the spec):

    x_t[n] = exp(delta_t A[d, n]) x_{t-1}[n] + delta_t B_t[n] u_t,     y_t = sum_n C_t[n] x_t[n]

One program owns (batch b, a block of BLOCK_D channels) and walks the sequence, holding x in registers
as a [BLOCK_D, BLOCK_N] tile. The backward program replays the forward once, writing every state to a
scratch buffer, then runs the adjoint recurrence from the other end:

    h_t = C_t gy_t + exp(delta_{t+1} A) h_{t+1}          (gradient w.r.t. x_t)
    du_t     = delta_t sum_n h_t B_t
    ddelta_t = u_t sum_n h_t B_t + sum_n h_t x_{t-1} exp(delta_t A) A
    dB_t     = sum_d h_t delta_t u_t,   dC_t = sum_d gy_t x_t,   dA = sum_{b,t} h_t x_{t-1} exp(delta_t A) delta_t

Plain pointer arithmetic (no block pointers) so it runs under TRITON_INTERPRET=1; one fixed config.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .host_math import cdiv, next_power_of_2

__all__ = ["selective_scan_triton", "selective_scan_triton_forward", "selective_scan_triton_backward"]


@triton.jit
def _program_tile(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, DIM, N,
                  s_u_b, s_u_d, s_dt_b, s_dt_d, s_A_d, s_A_n, s_B_b, s_B_n, s_C_b, s_C_n,
                  BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """What the program (batch b, block of BLOCK_D channels) owns: (pid_b (int64), pid_d, offs_d, offs_n, mask_d,
    mask_n, mask_dn, its fp32 A tile [BLOCK_D, BLOCK_N], and the base pointers of u, delta, B, C at t = 0)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_dn, other=0.0).to(tl.float32)
    u_base = u_ptr + pid_b * s_u_b + offs_d * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
    B_base = B_ptr + pid_b * s_B_b + offs_n * s_B_n
    C_base = C_ptr + pid_b * s_C_b + offs_n * s_C_n
    return pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, u_base, dt_base, B_base, C_base


@triton.jit
def _load_step(u_base, dt_base, B_base, t, s_u_l, s_dt_l, s_B_l, mask_d, mask_n):
    """u_t, delta_t [BLOCK_D] and B_t [BLOCK_N] of token t in fp32 (zeros where masked)."""
    u_t = tl.load(u_base + t * s_u_l, mask=mask_d, other=0.0).to(tl.float32)
    dt_t = tl.load(dt_base + t * s_dt_l, mask=mask_d, other=0.0).to(tl.float32)
    B_t = tl.load(B_base + t * s_B_l, mask=mask_n, other=0.0).to(tl.float32)
    return u_t, dt_t, B_t


@triton.jit
def _ssm_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, y_ptr,
    L, DIM, N,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_n, s_B_l,
    s_C_b, s_C_n, s_C_l,
    s_y_b, s_y_d, s_y_l,
    REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, u_base, dt_base, B_base, C_base = _program_tile(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, DIM, N,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_A_d, s_A_n, s_B_b, s_B_n, s_C_b, s_C_n, BLOCK_D, BLOCK_N)
    y_base = y_ptr + pid_b * s_y_b + offs_d * s_y_d

    # the loads of step i + 1 are issued before step i computes, hiding their latency behind the recurrence
    t0, step = 0, 1
    if REVERSE:
        t0, step = L - 1, -1
    u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, t0, s_u_l, s_dt_l, s_B_l, mask_d, mask_n)
    C_n = tl.load(C_base + t0 * s_C_l, mask=mask_n, other=0.0).to(tl.float32)
    x = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for i in range(0, L):
        t = i
        if REVERSE:
            t = L - 1 - i
        u_t, dt_t, B_t, C_t = u_n, dt_n, B_n, C_n
        nxt = t + step
        has_next = i + 1 < L
        u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, nxt, s_u_l, s_dt_l, s_B_l,
                                    mask_d & has_next, mask_n & has_next)
        C_n = tl.load(C_base + nxt * s_C_l, mask=mask_n & has_next, other=0.0).to(tl.float32)
        x = tl.exp(dt_t[:, None] * A) * x + (dt_t * u_t)[:, None] * B_t[None, :]
        y_t = tl.sum(x * C_t[None, :], axis=1)
        tl.store(y_base + t * s_y_l, y_t, mask=mask_d)


@triton.jit
def _ssm_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, states_ptr,
    du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr,
    L, DIM, N, NBLK,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_n, s_B_l,
    s_C_b, s_C_n, s_C_l,
    s_gy_b, s_gy_d, s_gy_l,
    REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # contiguous outputs, laid out so that each step writes one contiguous run:
    # du, ddt [b, L, DIM]; dA [b, DIM, N]; dB, dC [b, NBLK, L, N]; states scratch [b, L, DIM, N]
    pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, u_base, dt_base, B_base, C_base = _program_tile(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, DIM, N,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_A_d, s_A_n, s_B_b, s_B_n, s_C_b, s_C_n, BLOCK_D, BLOCK_N)
    gy_base = gy_ptr + pid_b * s_gy_b + offs_d * s_gy_d
    st_base = states_ptr + pid_b * L * DIM * N + offs_d[:, None] * N + offs_n[None, :]
    du_base = du_ptr + pid_b * L * DIM + offs_d
    ddt_base = ddt_ptr + pid_b * L * DIM + offs_d
    dB_base = dB_ptr + (pid_b * NBLK + pid_d) * L * N + offs_n
    dC_base = dC_ptr + (pid_b * NBLK + pid_d) * L * N + offs_n

    # 1) replay the forward recurrence, keeping every state (loads of the next step prefetched)
    t0, step = 0, 1
    if REVERSE:
        t0, step = L - 1, -1
    u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, t0, s_u_l, s_dt_l, s_B_l, mask_d, mask_n)
    x = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for i in range(0, L):
        t = i
        if REVERSE:
            t = L - 1 - i
        u_t, dt_t, B_t = u_n, dt_n, B_n
        nxt = t + step
        has_next = i + 1 < L
        u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, nxt, s_u_l, s_dt_l, s_B_l,
                                    mask_d & has_next, mask_n & has_next)
        x = tl.exp(dt_t[:, None] * A) * x + (dt_t * u_t)[:, None] * B_t[None, :]
        tl.store(st_base + t * DIM * N, x, mask=mask_dn)
    tl.debug_barrier()  # the states written above are read back by other threads of this program

    # 2) adjoint recurrence, visiting tokens in the opposite order of the forward; the state before
    # step t is the state at the next visited token, so it is loaded once and carried
    t1 = L - 1
    if REVERSE:
        t1 = 0
    u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, t1, s_u_l, s_dt_l, s_B_l, mask_d, mask_n)
    C_n = tl.load(C_base + t1 * s_C_l, mask=mask_n, other=0.0).to(tl.float32)
    gy_n = tl.load(gy_base + t1 * s_gy_l, mask=mask_d, other=0.0).to(tl.float32)
    x_n = tl.load(st_base + t1 * DIM * N, mask=mask_dn, other=0.0)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for i in range(0, L):
        t = L - 1 - i
        t_prev = t - 1
        if REVERSE:
            t = i
            t_prev = i + 1
        has_prev = i < L - 1
        u_t, dt_t, B_t, C_t, gy_t, x_t = u_n, dt_n, B_n, C_n, gy_n, x_n
        x_prev = tl.load(st_base + t_prev * DIM * N, mask=mask_dn & has_prev, other=0.0)
        u_n, dt_n, B_n = _load_step(u_base, dt_base, B_base, t_prev, s_u_l, s_dt_l, s_B_l,
                                    mask_d & has_prev, mask_n & has_prev)
        C_n = tl.load(C_base + t_prev * s_C_l, mask=mask_n & has_prev, other=0.0).to(tl.float32)
        gy_n = tl.load(gy_base + t_prev * s_gy_l, mask=mask_d & has_prev, other=0.0).to(tl.float32)
        x_n = x_prev

        h += gy_t[:, None] * C_t[None, :]
        decay = tl.exp(dt_t[:, None] * A)
        g_decay = h * x_prev * decay                      # d/d(delta A) of the decay term
        hB = tl.sum(h * B_t[None, :], axis=1)
        tl.store(du_base + t * DIM, dt_t * hB, mask=mask_d)
        tl.store(ddt_base + t * DIM, u_t * hB + tl.sum(g_decay * A, axis=1), mask=mask_d)
        tl.store(dB_base + t * N, tl.sum(h * (dt_t * u_t)[:, None], axis=0), mask=mask_n)
        tl.store(dC_base + t * N, tl.sum(x_t * gy_t[:, None], axis=0), mask=mask_n)
        dA_acc += g_decay * dt_t[:, None]
        h = h * decay

    tl.store(dA_ptr + pid_b * DIM * N + offs_d[:, None] * N + offs_n[None, :], dA_acc, mask=mask_dn)


# A [BLOCK_D, BLOCK_N] = 32 x 16 tile per program and a sequential loop: two warps per program lets
# more programs stay resident per SM (one wave for Vim-S at batch 128). Not tuned on hardware yet.
_NUM_WARPS = 2


def _blocks(dim: int, d_state: int, block_d: int | None):
    block_n = max(next_power_of_2(d_state), 2)
    if block_d is None:
        block_d = 32 if d_state <= 16 else 16
    return block_d, block_n, cdiv(dim, block_d)


def selective_scan_triton_forward(u, delta, A, B, C, reverse: bool = False, block_d: int | None = None):
    """Forward launch: y [b, d, L] fp32 (a [b, L, d] buffer seen as [b, d, L]). Any strides are accepted."""
    bsz, dim, length = (int(s) for s in u.shape)
    d_state = int(A.shape[1])
    BLOCK_D, BLOCK_N, nblk = _blocks(dim, d_state, block_d)
    # [b, L, d] storage (each step stores BLOCK_D adjacent floats), returned as a [b, d, L] view
    y = torch.empty(bsz, length, dim, device=u.device, dtype=torch.float32).transpose(1, 2)
    if length > 0 and bsz > 0:
        _ssm_fwd_kernel[(bsz, nblk)](
            u, delta, A, B, C, y, length, dim, d_state,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *y.stride(),
            REVERSE=bool(reverse), BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, num_warps=_NUM_WARPS,
        )
    return y


def selective_scan_triton_backward(u, delta, A, B, C, gy, reverse: bool = False, block_d: int | None = None):
    """Backward launch for the gradient gy [b, d, L] of y: (du, ddelta, dA, dB, dC) in the inputs' dtypes."""
    bsz, dim, length = (int(s) for s in u.shape)
    d_state = int(A.shape[1])
    BLOCK_D, BLOCK_N, nblk = _blocks(dim, d_state, block_d)
    dev, f32 = u.device, torch.float32
    states = torch.empty(bsz, length, dim, d_state, device=dev, dtype=f32)
    du = torch.empty(bsz, length, dim, device=dev, dtype=f32)
    ddt = torch.empty(bsz, length, dim, device=dev, dtype=f32)
    dA = torch.zeros(bsz, dim, d_state, device=dev, dtype=f32)
    dB = torch.empty(bsz, nblk, length, d_state, device=dev, dtype=f32)
    dC = torch.empty(bsz, nblk, length, d_state, device=dev, dtype=f32)
    if length > 0 and bsz > 0:
        _ssm_bwd_kernel[(bsz, nblk)](
            u, delta, A, B, C, gy, states, du, ddt, dA, dB, dC,
            length, dim, d_state, nblk,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *gy.stride(),
            REVERSE=bool(reverse), BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, num_warps=_NUM_WARPS,
        )
    return (du.transpose(1, 2).to(u.dtype), ddt.transpose(1, 2).to(delta.dtype), dA.sum(0).to(A.dtype),
            dB.sum(1).transpose(1, 2).to(B.dtype), dC.sum(1).transpose(1, 2).to(C.dtype))


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, reverse, block_d):
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.reverse, ctx.block_d = bool(reverse), block_d
        return selective_scan_triton_forward(u, delta, A, B, C, reverse, block_d)

    @staticmethod
    def backward(ctx, gy):
        return selective_scan_triton_backward(*ctx.saved_tensors, gy, ctx.reverse, ctx.block_d) + (None, None)


def selective_scan_triton(u, delta, A, B, C, reverse: bool = False, block_d: int | None = None):
    """y [b, d, L] fp32 of the recurrence above. u, delta [b, d, L]; A [d, N]; B, C [b, N, L].

    delta is the final step size (bias and softplus already applied). Any strides are accepted.
    Differentiable (autograd.Function over selective_scan_triton_forward / selective_scan_triton_backward).
    """
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError("selective_scan_triton: B and C must be [batch, d_state, length]")
    if block_d is not None and (block_d & (block_d - 1)):
        raise ValueError(f"selective_scan_triton: block_d must be a power of two, got {block_d}")
    return _SelectiveScanFn.apply(u, delta, A, B, C, reverse, block_d)
