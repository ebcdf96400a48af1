"""Mamba-1 selective scan (S6), the SSM of Vim and MambaVision.

Per batch b, channel d and state index n (A real, diagonal; B, C input-dependent, shared by channel groups):

    delta_t = softplus(delta_t + delta_bias)         (softplus and bias optional)
    x_t[n]  = exp(delta_t A[d, n]) x_{t-1}[n] + delta_t B_t[n] u_t          x_0 = 0, fp32 state
    y_t     = sum_n C_t[n] x_t[n] + D[d] u_t
    out_t   = y_t * silu(z_t)                         (gate optional)

reverse=True runs the recurrence from the last token to the first (same as flip, scan, flip back).
Layout follows mamba_ssm's ``selective_scan_fn``: u, delta, z [B, D, L]; A [D, N];
B, C [B, N, L] or [B, G, N, L] (G groups of D // G channels); D, delta_bias [D].

Backends: "reference" (token by token in PyTorch, the spec in code, differentiable by autograd),
"torch" (the same recurrence as a log-depth parallel prefix scan in PyTorch: ceil(log2 L) vectorised
steps instead of L small ones; any device, differentiable by autograd), "triton" (kernels/selective_scan.py, forward and backward, fp32 state),
"mamba_ssm" (the CUDA kernel, only when ``import mamba_ssm`` works), "auto" (mamba_ssm, then triton on
CUDA tensors, else torch).
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "selective_scan_reference", "selective_scan_parallel", "available_backends", "selective_scan_macs",
           "selective_scan_flop_jit", "FVCORE_HANDLES"]

_BACKENDS = ("auto", "reference", "torch", "triton", "mamba_ssm")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be [batch, channels, length], got shape {tuple(u.shape)}")
    bsz, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta shape {tuple(delta.shape)} must equal u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be [channels={dim}, d_state], got shape {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (Vim and MambaVision use real A)")
    d_state = A.shape[1]
    for name, m in (("B", B), ("C", C)):
        if m.dim() == 3:
            ok = m.shape == (bsz, d_state, length)
        elif m.dim() == 4:
            ok = m.shape[0] == bsz and m.shape[2:] == (d_state, length) and dim % m.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must be [batch={bsz}, d_state={d_state}, length={length}] or "
                f"[batch, groups dividing {dim}, d_state, length], got shape {tuple(m.shape)}")
    if D is not None and D.shape != (dim,):
        raise ValueError(f"selective_scan: D must be [channels={dim}], got shape {tuple(D.shape)}")
    if delta_bias is not None and delta_bias.shape != (dim,):
        raise ValueError(f"selective_scan: delta_bias must be [channels={dim}], got shape {tuple(delta_bias.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z shape {tuple(z.shape)} must equal u shape {tuple(u.shape)}")


def _per_channel(m: torch.Tensor, dim: int) -> torch.Tensor:
    """B or C as [batch, channels or 1, length, d_state] (groups expanded to their channels)."""
    if m.dim() == 3:
        return m.transpose(1, 2).unsqueeze(1)
    groups = m.shape[1]
    return m.repeat_interleave(dim // groups, dim=1).transpose(2, 3)


def _prepare_delta(delta, delta_bias, delta_softplus, dtype):
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y, u, D, z, out_dtype):
    """y + D u, gated by silu(z); y is fp32 (or fp64) from the scan."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             reverse=False):
    """Token by token recurrence of the module docstring. State in fp32 (fp64 for fp64 inputs)."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = torch.promote_types(u.dtype, torch.float32)
    dim, length = u.shape[1], u.shape[2]
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    Bt = _per_channel(B.to(dtype), dim)                         # [b, d|1, L, N]
    Ct = _per_channel(C.to(dtype), dim)
    decay = torch.exp(delta.unsqueeze(-1) * A.to(dtype)[:, None])  # exp(delta_t A): [b, d, L, N]
    drive = (delta * u.to(dtype)).unsqueeze(-1) * Bt            # delta_t B_t u_t
    x = torch.zeros_like(decay[:, :, 0])
    ys = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        x = decay[:, :, t] * x + drive[:, :, t]
        ys[t] = (x * Ct[:, :, t]).sum(-1)
    y = torch.stack(ys, dim=-1) if length > 0 else u.new_zeros(u.shape, dtype=dtype)
    return _finish(y, u, D, z, u.dtype)


def _prefix_scan(decay: torch.Tensor, drive: torch.Tensor, reverse: bool) -> torch.Tensor:
    """All states of x_t = decay_t x_{t-1} + drive_t (x_0 = 0) along dim 2, by Hillis-Steele doubling:
    after the step with offset k, (a_t, x_t) hold the composition of the last 2k steps ending at t.
    Only products of decays (each <= 1) appear, so it is as stable as the sequential loop."""
    if reverse:
        decay, drive = decay.flip(2), drive.flip(2)
    a, x = decay, drive
    k, length = 1, decay.shape[2]
    if length == 1:  # x_1 = decay_1 x_0 + drive_1 with x_0 = 0: keep decay (so A) in the graph, zero gradient
        x = x + 0.0 * a
    while k < length:
        x = x + a * F.pad(x[:, :, :-k], (0, 0, k, 0))                # x_t += a_t x_{t-k}
        a = a * F.pad(a[:, :, :-k], (0, 0, k, 0), value=1.0)        # a_t *= a_{t-k}
        k *= 2
    return x.flip(2) if reverse else x


def selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            reverse=False):
    """Same result as selective_scan_reference, via _prefix_scan (fp32 state; fp64 for fp64 inputs)."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = torch.promote_types(u.dtype, torch.float32)
    dim = u.shape[1]
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    decay = torch.exp(delta.unsqueeze(-1) * A.to(dtype)[:, None])                # [b, d, L, N]
    drive = (delta * u.to(dtype)).unsqueeze(-1) * _per_channel(B.to(dtype), dim)
    x = _prefix_scan(decay, drive, reverse)
    y = (x * _per_channel(C.to(dtype), dim)).sum(-1)
    return _finish(y, u, D, z, u.dtype)


@functools.lru_cache(maxsize=None)
def _mamba_ssm_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # type: ignore
    except Exception:  # not installed, or installed without its compiled extension
        return None
    return selective_scan_fn


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    device = torch.device(device)
    names = ["reference", "torch"]
    if device.type == "cuda":
        names.append("triton")
        if _mamba_ssm_fn() is not None:
            names.append("mamba_ssm")
    return names


def _triton_ok(u, B, C) -> bool:
    return u.is_cuda and B.dim() == 3 and C.dim() == 3


class SelectiveScanFunction(torch.autograd.Function):
    """Opaque wrapper used only while tracing (fvcore sees `prim::PythonOp.SelectiveScanFunction`,
    counted by `selective_scan_flop_jit`). The last two inputs say whether D and z are present."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, has_D, has_z):
        return _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - tracing is forward only
        raise RuntimeError("SelectiveScanFunction is a tracing-only wrapper; it has no backward")


def selective_scan_macs(batch: int, dim: int, length: int, d_state: int, has_D: bool = True,
                        has_z: bool = True) -> int:
    """Operation count of the scan as VMamba and mamba's authors count it (state-spaces/mamba#110):
    9 per (token, channel, state) for discretisation, recurrence and read-out, plus one per token and
    channel for each of the D skip and the z gate."""
    return 9 * batch * length * dim * d_state + (int(has_D) + int(has_z)) * batch * dim * length


def selective_scan_flop_jit(inputs, outputs) -> int:
    """fvcore handle for `prim::PythonOp.SelectiveScanFunction` (inputs: u, delta, A, B, C, ...)."""
    from fvcore.nn.jit_handles import get_shape

    batch, dim, length = get_shape(inputs[0])
    d_state = get_shape(inputs[2])[1]
    scalars = list(outputs[0].node().scalar_args())
    has_D, has_z = bool(scalars[-2]), bool(scalars[-1])
    return selective_scan_macs(batch, dim, length, d_state, has_D, has_z)


FVCORE_HANDLES = {"prim::PythonOp.SelectiveScanFunction": selective_scan_flop_jit}


def _resolve_backend(backend: str, u: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {_BACKENDS}")
    if backend == "auto":
        if u.is_cuda and _mamba_ssm_fn() is not None:
            return "mamba_ssm"
        return "triton" if _triton_ok(u, B, C) else "torch"
    if backend == "mamba_ssm":
        if _mamba_ssm_fn() is None:
            raise RuntimeError("selective_scan: backend 'mamba_ssm' requested but `import mamba_ssm` failed")
        if not u.is_cuda:
            raise RuntimeError("selective_scan: backend 'mamba_ssm' needs CUDA tensors")
    if backend == "triton":
        if not u.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError("selective_scan: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
        if B.dim() != 3 or C.dim() != 3:
            raise ValueError("selective_scan: the triton backend supports B, C of shape [batch, d_state, length] "
                             "(one group); use backend='torch' for grouped B/C")
    return backend


def _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    if backend == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    if backend == "torch":
        return selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    if backend == "mamba_ssm":
        fn = _mamba_ssm_fn()
        if reverse:  # mamba_ssm has no reverse flag: flip time, scan, flip back
            flip = lambda t: None if t is None else t.flip(-1)  # noqa: E731
            out = fn(u.flip(-1), delta.flip(-1), A, B.flip(-1), C.flip(-1), D, flip(z), delta_bias,
                     delta_softplus)
            return out.flip(-1)
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    from gka_kernels.selective_scan import selective_scan_triton
    delta_eff = _prepare_delta(delta, delta_bias, delta_softplus, torch.float32)
    y = selective_scan_triton(u, delta_eff, A, B, C, reverse=reverse)   # fp32 [b, d, L]
    return _finish(y, u, D, z, u.dtype)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   reverse: bool = False, backend: str = "auto") -> torch.Tensor:
    """Mamba-1 selective scan; see the module docstring for the math and shapes. Returns [B, D, L] in u's dtype."""
    if backend not in _BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {_BACKENDS}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    backend = _resolve_backend(backend, u, B, C)
    with torch.autocast(device_type=u.device.type, enabled=False):
        if torch.jit.is_tracing():
            return SelectiveScanFunction.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                                               backend, D is not None, z is not None)
        return _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend)
