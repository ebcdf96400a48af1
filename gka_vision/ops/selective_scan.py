"""Mamba-1 selective scan (S6), the SSM of Vim and MambaVision.

Per batch b, channel d and state index n (A real, diagonal; B, C input-dependent, shared by channel groups):

    delta_t = softplus(delta_t + delta_bias)         (softplus and bias optional)
    x_t[n]  = exp(delta_t A[d, n]) x_{t-1}[n] + delta_t B_t[n] u_t          x_0 = 0, fp32 state
    y_t     = sum_n C_t[n] x_t[n] + D[d] u_t
    out_t   = y_t * silu(z_t)                         (gate optional)

reverse=True runs the recurrence from the last token to the first (same as flip, scan, flip back).
Layout follows mamba_ssm's ``selective_scan_fn``: u, delta, z [B, D, L]; A [D, N];
B, C [B, N, L] or [B, G, N, L] (G groups of D // G channels); D, delta_bias [D].

Backends: "reference" (token by token in PyTorch, the spec in code), "torch" (selective_scan_chunked.py: log-depth
prefix scans over chunks of bounded size, with an explicit backward; any device), "triton"
(kernels/selective_scan.py, forward and backward, fp32 state), "mamba_ssm" (mamba_ssm's compiled CUDA extension
`selective_scan_cuda`, only when it imports), "auto" (mamba_ssm, then triton on CUDA tensors, else torch).

The scan is one torch.library custom op, `torch.ops.gka_vision.selective_scan` (fake implementation and
autograd registered; the backward is the op `gka_vision::selective_scan_backward`), so torch.compile and
torch.export see one opaque node; torch.jit.trace records it and fvcore counts it with selective_scan_flop_jit.
The forward op returns what its backward needs besides the inputs: mamba_ssm's chunk states (and its
pre-gate output), the Triton scan's fp32 output when there is a z gate, nothing for torch and reference (their
backward recomputes). While an ONNX exporter traces, the torch backend runs as plain tensor ops instead.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._op_utils import autograd_inside_op, no_alias
from .scan_replay import call_scan
from .selective_scan_chunked import scan_backward, scan_forward

__all__ = ["selective_scan", "selective_scan_reference", "selective_scan_parallel", "available_backends",
           "selective_scan_macs", "selective_scan_flop_jit", "FVCORE_HANDLES"]

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


def selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            reverse=False):
    """Same result as selective_scan_reference, with the torch backend (chunked prefix scans, fp32 state)."""
    return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend="torch")


# ---- mamba_ssm ---------------------------------------------------------------------------------------------

def _installed(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def _mamba_ssm_ext():
    """mamba_ssm's compiled extension (module `selective_scan_cuda` with fwd/bwd), or None.

    Found through an installed mamba_ssm, or on its own (the extension built from mamba's csrc/selective_scan
    without the Python package, as scripts/gpu_anchors_env.sh does). `mamba_ssm.ops.selective_scan_interface`
    imports without it in a broken install (e.g. built with MAMBA_SKIP_CUDA_BUILD), so the extension itself is
    checked; one warning says why it is not used."""
    if not (_installed("mamba_ssm") or _installed("selective_scan_cuda")):
        return None
    try:
        iface = importlib.import_module("mamba_ssm.ops.selective_scan_interface") if _installed("mamba_ssm") else None
        ext = getattr(iface, "selective_scan_cuda", None) or importlib.import_module("selective_scan_cuda")
    except Exception as e:  # noqa: BLE001  (a missing .so, an ABI mismatch: ImportError, OSError...)
        warnings.warn(f"selective_scan: mamba_ssm's CUDA extension selective_scan_cuda does not import "
                      f"({type(e).__name__}: {e}); using this project's scans instead "
                      f"(reinstall mamba_ssm with its CUDA build to use it).", RuntimeWarning, stacklevel=2)
        return None
    if not (callable(getattr(ext, "fwd", None)) and callable(getattr(ext, "bwd", None))):
        warnings.warn("selective_scan: mamba_ssm's selective_scan_cuda has no fwd/bwd; using this project's scans "
                      "instead.", RuntimeWarning, stacklevel=2)
        return None
    return ext


@torch.compiler.assume_constant_result
def _mamba_ssm_available() -> bool:
    return _mamba_ssm_ext() is not None


def _mamba_ssm_fn():  # kept for callers that test availability (benchmarks/compare.py)
    return _mamba_ssm_ext()


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    device = torch.device(device)
    names = ["reference", "torch"]
    if device.type == "cuda":
        names.append("triton")
        if _mamba_ssm_available():
            names.append("mamba_ssm")
    return names


def _triton_ok(u, B, C) -> bool:
    return u.is_cuda and B.dim() == 3 and C.dim() == 3


def selective_scan_macs(batch: int, dim: int, length: int, d_state: int, has_D: bool = True,
                        has_z: bool = True) -> int:
    """Operation count of the scan as VMamba and mamba's authors count it (state-spaces/mamba#110):
    9 per (token, channel, state) for discretisation, recurrence and read-out, plus one per token and
    channel for each of the D skip and the z gate."""
    return 9 * batch * length * dim * d_state + (int(has_D) + int(has_z)) * batch * dim * length


def selective_scan_flop_jit(inputs, outputs) -> int:
    """fvcore handle of `gka_vision::selective_scan` (inputs: u, delta, A, B, C, D, z, delta_bias, ...)."""
    from fvcore.nn.jit_handles import get_shape

    batch, dim, length = get_shape(inputs[0])
    d_state = get_shape(inputs[2])[1]
    present = lambda v: v.type().kind() != "NoneType"  # noqa: E731  (an absent optional is a None constant)
    return selective_scan_macs(batch, dim, length, d_state, present(inputs[5]), present(inputs[6]))


FVCORE_HANDLES = {"gka_vision::selective_scan": selective_scan_flop_jit}


@torch.compiler.assume_constant_result
def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@torch.compiler.assume_constant_result
def _onnx_exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def resolve_backend(backend: str, u: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> str:
    """The backend that ``selective_scan(u, ..., B, C, backend=backend)`` runs: 'auto' resolved for these
    inputs, an unknown or unusable choice refused."""
    if backend not in _BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {_BACKENDS}")
    if backend == "auto":
        if u.is_cuda and _mamba_ssm_available():
            return "mamba_ssm"
        return "triton" if _triton_ok(u, B, C) else "torch"
    if backend == "mamba_ssm":
        if not _mamba_ssm_available():
            raise RuntimeError("selective_scan: backend 'mamba_ssm' requested but mamba_ssm with its CUDA extension "
                               "selective_scan_cuda does not import")
        if not u.is_cuda:
            raise RuntimeError("selective_scan: backend 'mamba_ssm' needs CUDA tensors")
    if backend == "triton":
        if not u.is_cuda and not _triton_interpret():
            raise ValueError("selective_scan: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
        if B.dim() != 3 or C.dim() != 3:
            raise ValueError("selective_scan: the triton backend supports B, C of shape [batch, d_state, length] "
                             "(one group); use backend='torch' for grouped B/C")
    return backend


# ---- the ops ---------------------------------------------------------------------------------------------

def _aux_shapes(u, A, z, backend):
    """(shape, dtype) of the two extra outputs of the forward op (see the module docstring)."""
    bsz, dim, length = u.shape
    none = ((0,), torch.float32)
    if backend == "mamba_ssm":
        n_chunks = (length + 2047) // 2048  # the extension's chunks of 2048 tokens
        return ((bsz, dim, n_chunks, 2 * A.shape[1]), torch.float32), (u.shape, u.dtype) if z is not None else none
    if backend == "triton" and z is not None:
        return (u.shape, torch.float32), none
    return none, none


def _mamba_args(u, delta, A, B, C, D, z, delta_bias, reverse):
    """The extension's dtypes and layout: delta, B, C, z in u's dtype, B/C with a group dim, time-contiguous;
    A, D, delta_bias fp32. reverse: time flipped (the extension has no reverse flag)."""
    f = (lambda t: t.flip(-1)) if reverse else (lambda t: t)  # noqa: E731
    c = lambda t: None if t is None else f(t.to(u.dtype)).contiguous()  # noqa: E731
    grp = lambda m: m.unsqueeze(1) if m.dim() == 3 else m  # noqa: E731
    return (f(u).contiguous(), c(delta), A.float().contiguous(), grp(c(B)), grp(c(C)),
            None if D is None else D.float().contiguous(), c(z),
            None if delta_bias is None else delta_bias.float().contiguous())


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    (s1, t1), (s2, t2) = _aux_shapes(u, A, z, backend)
    if u.shape[-1] == 0:
        return u.new_zeros(u.shape), u.new_zeros(s1, dtype=t1), u.new_zeros(s2, dtype=t2)
    with torch.autocast(u.device.type, enabled=False):
        if backend == "reference":
            out = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
            return out.contiguous(), u.new_zeros(s1, dtype=t1), u.new_zeros(s2, dtype=t2)
        if backend == "mamba_ssm":
            res = _mamba_ssm_ext().fwd(*_mamba_args(u, delta, A, B, C, D, z, delta_bias, reverse), delta_softplus)
            f = (lambda t: t.flip(-1)) if reverse else (lambda t: t)  # noqa: E731
            out, x = res[0], res[1]
            if z is None:
                return f(out).contiguous(), x.contiguous(), u.new_zeros(s2, dtype=t2)
            return f(res[2]).contiguous(), x.contiguous(), out.contiguous()  # out kept in the flipped time order
        if backend == "triton":
            from gka_kernels.selective_scan import selective_scan_triton_forward
            delta_eff = _prepare_delta(delta, delta_bias, delta_softplus, torch.float32)
            y = selective_scan_triton_forward(u, delta_eff, A, B, C, bool(reverse))
        else:
            y = scan_forward(u, delta, A, B, C, delta_bias, delta_softplus, reverse)
        out = _finish(y, u, D, z, u.dtype).contiguous()
        return out, (y.contiguous() if z is not None and backend == "triton" else u.new_zeros(s1, dtype=t1)), \
            u.new_zeros(s2, dtype=t2)


def _dsilu(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _backward(dout, u, delta, A, B, C, D, z, delta_bias, s1, s2, delta_softplus, reverse, backend):
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) in the inputs' dtypes; an empty tensor for an absent input."""
    empty = lambda: u.new_zeros((0,), dtype=torch.float32)  # noqa: E731  (a new one each: outputs never alias)
    opt = lambda g, t: empty() if t is None else g.to(t.dtype).contiguous()  # noqa: E731
    if u.shape[-1] == 0:
        zeros = lambda t: empty() if t is None else torch.zeros_like(t)  # noqa: E731
        return tuple(zeros(t) for t in (u, delta, A, B, C, D, z, delta_bias))
    with torch.autocast(u.device.type, enabled=False):
        if backend == "reference":
            names = [t for t in (u, delta, A, B, C, D, z, delta_bias)]
            leaves = [None if t is None else t.detach().requires_grad_() for t in names]
            with autograd_inside_op():
                out = selective_scan_reference(*leaves, delta_softplus, reverse)
                present = [t for t in leaves if t is not None]
                grads = iter(torch.autograd.grad(out, present, dout.to(out.dtype), allow_unused=True))
            res = []
            for t in leaves:
                g = None if t is None else next(grads)
                res.append(opt(torch.zeros_like(t) if t is not None and g is None else g, t))
            return tuple(res)
        if backend == "mamba_ssm":
            args = _mamba_args(u, delta, A, B, C, D, z, delta_bias, reverse)
            f = (lambda t: t.flip(-1)) if reverse else (lambda t: t)  # noqa: E731
            res = _mamba_ssm_ext().bwd(*args, f(dout.to(u.dtype)).contiguous(), s1,
                                       s2 if z is not None else None, None, delta_softplus, False)
            du, ddelta, dA, dB, dC, dD, dbias = res[:7]
            dz = res[7] if z is not None else None
            dB = dB.squeeze(1) if B.dim() == 3 else dB
            dC = dC.squeeze(1) if C.dim() == 3 else dC
            return (opt(f(du), u), opt(f(ddelta), delta), opt(dA, A), opt(f(dB), B), opt(f(dC), C), opt(dD, D),
                    opt(None if dz is None else f(dz), z), opt(dbias, delta_bias))
        dtype = torch.promote_types(u.dtype, torch.float32)
        dout = dout.to(dtype)
        gy = dout if z is None else dout * F.silu(z.to(dtype))
        if backend == "triton":
            from gka_kernels.selective_scan import selective_scan_triton_backward
            pre = delta.float() if delta_bias is None else delta.float() + delta_bias.float()[:, None]
            delta_eff = F.softplus(pre) if delta_softplus else pre
            du, ddt, dA, dB, dC = selective_scan_triton_backward(u, delta_eff, A, B, C, gy.float(), bool(reverse))
            ddelta = ddt.float() * torch.sigmoid(pre) if delta_softplus else ddt.float()
            dbias = None if delta_bias is None else ddelta.sum((0, 2))
            y = s1
        else:
            du, ddelta, dA, dB, dC, dbias, y = scan_backward(gy, u, delta, A, B, C, delta_bias, delta_softplus,
                                                            reverse)
        du = du.to(dtype)
        dD = None
        if D is not None:
            uD = u.to(dtype)
            dD = (gy * uD).sum((0, 2))
            du = du + gy * D.to(dtype)[:, None]
        dz = None
        if z is not None:
            y_total = y.to(dtype) if D is None else y.to(dtype) + u.to(dtype) * D.to(dtype)[:, None]
            dz = dout * y_total * _dsilu(z.to(dtype))
        return (opt(du, u), opt(ddelta, delta), opt(dA, A), opt(dB, B), opt(dC, C), opt(dD, D), opt(dz, z),
                opt(dbias, delta_bias))


@torch.library.custom_op("gka_vision::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool,
                       backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(out, saved, saved): out of the module docstring and what the backward op needs (backend-specific)."""
    return no_alias(_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend),
                    (u, delta, A, B, C, D, z, delta_bias))


@torch.library.custom_op("gka_vision::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor], s1: Tensor,
                                s2: Tensor, delta_softplus: bool, reverse: bool, backend: str
                                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); an empty tensor for an absent optional input."""
    return no_alias(_backward(dout, u, delta, A, B, C, D, z, delta_bias, s1, s2, delta_softplus, reverse, backend),
                    (dout, u, delta, A, B, C, D, z, delta_bias, s1, s2))


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    (s1, t1), (s2, t2) = _aux_shapes(u, A, z, backend)
    return u.new_empty(u.shape), u.new_empty(s1, dtype=t1), u.new_empty(s2, dtype=t2)


@_selective_scan_backward_op.register_fake
def _(dout, u, delta, A, B, C, D, z, delta_bias, s1, s2, delta_softplus, reverse, backend):
    like = lambda t: u.new_empty((0,), dtype=torch.float32) if t is None else \
        torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    return tuple(like(t) for t in (u, delta, A, B, C, D, z, delta_bias))


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1], output[2])
    ctx.opts = (delta_softplus, reverse, backend)


def _backward_fn(ctx, dout, _d1, _d2):
    u, delta, A, B, C, D, z, delta_bias, s1, s2 = ctx.saved_tensors
    grads = torch.ops.gka_vision.selective_scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, s1, s2, *ctx.opts)
    grads = [None if t is None else g for g, t in zip(grads, (u, delta, A, B, C, D, z, delta_bias))]
    return (*grads, None, None, None)


_selective_scan_op.register_autograd(_backward_fn, setup_context=_setup)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   reverse: bool = False, backend: str = "auto") -> torch.Tensor:
    """Mamba-1 selective scan; see the module docstring for the math and shapes. Returns [B, D, L] in u's dtype."""
    if backend not in _BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {_BACKENDS}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    backend = resolve_backend(backend, u, B, C)
    if _onnx_exporting():
        with torch.autocast(device_type=u.device.type, enabled=False):
            y = scan_forward(u, delta, A, B, C, delta_bias, bool(delta_softplus), bool(reverse))
            return _finish(y, u, D, z, u.dtype)
    # the op's implementations turn autocast off themselves (fp32 state whatever the input dtype)
    return call_scan(torch.ops.gka_vision.selective_scan, _setup, u, delta, A, B, C, D, z, delta_bias,
                     bool(delta_softplus), bool(reverse), backend)[0]
