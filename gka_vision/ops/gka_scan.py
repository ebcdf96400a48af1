"""`gka_scan`: the single entry point of the GKA core; every backend implements this contract.

    o = gka_scan(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None,
                 reverse=False, backend="auto", config=None)

q, k, v [B, T, H, D] (fp32/bf16/fp16; q, k L2-normalised, k and v already scaled by beta), alpha [B, T, H],
g [B, T, H] fp32 log forget gate (<= 0) of the value state, gk the gate of the key covariance (default g).
Returns o [B, T, H, D] in q's dtype (T = 0 gives an empty o). docs/gka_spec.md section 1 with the Chebyshev solve of
section 2.

Backends: "reference" (float64, token by token, exact solve), "torch" (chunked, any device),
"triton" (CUDA kernels in `gka_kernels`), "auto" (triton on CUDA when importable, else torch). `config` tunes the
triton backend (the others ignore it): None for `default_config(solve_dtype(q, k, v))`, a GKAKernelConfig used as it
is, or a spec string of overrides on top of that default ("exact_operands=0,num_warps=8": GKAKernelConfig.from_spec).

Each scan is one torch.library custom op (`torch.ops.gka_vision.gka_scan`, `...gka_scan_bidirectional`, with
a registered fake implementation and autograd), so torch.compile (fullgraph, any mode) and torch.export see one
opaque node per scan and never trace into the backends; torch.jit.trace records the op (saved programs load
after `import gka_vision`); fvcore counts it with `flops.gka_scan_flop_jit`. The forward op returns, besides o,
what its backward op needs: for "triton" the solved x and ||H_t||_F of the kernels, for "torch" the solved x
(the backward rebuilds the differentiable part around it instead of solving again, gka_chunked.py), for
"reference" nothing (its backward re-runs it under autograd). In eager mode with the triton backend the public
functions call the same implementation through a plain autograd.Function instead, which costs less host time than
torch.library's dispatch (`_EagerScan`, below). ONNX has no such operator: while an ONNX exporter
traces (torch.onnx.is_in_onnx_export()), the scans run as the torch backend's plain tensor ops instead.
"""
import functools
import os
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._op_utils import autograd_inside_op, no_alias
from .gka_chunked import gka_chunked_backward, gka_chunked_forward, gka_scan_chunked
from .gka_reference import gka_scan_reference
from .scan_replay import call_scan

BACKENDS = ("auto", "reference", "torch", "triton")

_debug_checks = os.environ.get("GKA_VISION_DEBUG", "0") not in ("", "0", "false", "False")


def set_debug_checks(enabled: bool):
    """Turn on NaN/inf checks of every gka_scan input (also via env GKA_VISION_DEBUG=1). Costs a sync."""
    global _debug_checks
    _debug_checks = bool(enabled)


def _triton_module():
    try:
        import gka_kernels
    except ImportError:
        return None
    return gka_kernels if hasattr(gka_kernels, "gka_triton_forward") else None


_warned_fallback = False


@torch.compiler.assume_constant_result
def _auto_backend(device_type: str) -> str:
    global _warned_fallback
    if device_type != "cuda":
        return "torch"
    if _triton_module() is not None:
        return "triton"
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn("gka_scan: backend='auto' on CUDA but gka_kernels (Triton) is not importable; "
                      "using the much slower 'torch' backend. Install the package (pip install -e .) "
                      "so that the kernels/ folder imports as gka_kernels.", RuntimeWarning, stacklevel=4)
    return "torch"


@torch.compiler.assume_constant_result
def _triton_problem(device_type: str) -> str:
    """'' when backend='triton' can run on this device type, else the reason."""
    if device_type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "gka_scan: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)"
    if _triton_module() is None:
        return "gka_scan: backend='triton' requested but gka_kernels is not available (is triton installed?)"
    return ""


@torch.compiler.assume_constant_result
def _onnx_exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def resolve_backend(backend, device):
    """The backend that ``gka_scan(..., backend=backend)`` runs on ``device``: 'auto' resolved, an unknown or
    unusable choice refused."""
    if backend not in BACKENDS:
        raise ValueError(f"gka_scan: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return _auto_backend(device.type)
    if backend == "triton":
        problem = _triton_problem(device.type)
        if problem:
            raise (ValueError if "CUDA" in problem else RuntimeError)(problem)
    return backend


def _check_inputs(q, k, v, alpha, gates):
    if q.dim() != 4:
        raise ValueError(f"gka_scan: q must be [B, T, H, D], got shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"gka_scan: {name} shape {tuple(t.shape)} != q shape {tuple(q.shape)}")
    bth = q.shape[:3]
    for name, t in [("alpha", alpha)] + list(gates.items()):
        if t is not None and t.shape != bth:
            raise ValueError(f"gka_scan: {name} must be [B, T, H] = {tuple(bth)}, got {tuple(t.shape)}")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise TypeError(f"gka_scan: unsupported dtype {q.dtype}")


def _debug_check(tensors, gates):
    """The checks of set_debug_checks (run inside the op, so they also run under torch.compile)."""
    for name, t in tensors.items():
        if t is not None and not torch.isfinite(t).all():
            raise FloatingPointError(f"gka_scan: input {name} contains NaN or inf")
    for name, t in gates.items():
        if t is not None and (t > 0).any():
            raise ValueError(f"gka_scan: log forget gate {name} must be <= 0")


def _config_spec(config) -> str:
    """A GKAKernelConfig (or a spec string of overrides, or None) as the string argument of the ops."""
    if config is None or isinstance(config, str):
        return config or ""
    return config.to_spec(full=True)  # every field: the object as it is, whatever the inputs' default


def _kernel_config(spec: str, q, k, v):
    """The kernels' config of a call: the spec's overrides on top of default_config(solve_dtype(q, k, v))."""
    return _parsed_config(spec, _triton_module().solve_dtype(q, k, v)) if spec else None


@functools.lru_cache(maxsize=64)
def _parsed_config(spec: str, dtype: torch.dtype):
    tri = _triton_module()
    return tri.GKAKernelConfig.from_spec(spec, tri.default_config(dtype))


# ---- the ops ---------------------------------------------------------------------------------------------
# Internally the directions of a call are gates [NDIR, B, T, H]: direction s scans in reverse when
# dir_base + s == 1 (one forward scan: dir_base 0; one reverse scan: dir_base 1; bidirectional: 0, NDIR = 2),
# the layout of the Triton host code (kernels/gka_function.py).

def _aux_shapes(q, ndir, backend):
    """(shape, dtype) of the x and ||H_t||_F outputs of the forward op."""
    B, T, H, D = q.shape
    if backend == "triton":
        return ((ndir, B, T, H, D), torch.float32), ((ndir, B, T, H), torch.float32)
    if backend == "torch":
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        return ((ndir, B, T, H, D), cdt), ((0,), torch.float32)
    return ((0,), torch.float32), ((0,), torch.float32)


def _forward(q, k, v, alpha, gates, gk, dir_base, ridge_ratio, num_iter, scale, backend, config):
    ndir = gates.shape[0]
    if _debug_checks:
        _debug_check(dict(q=q, k=k, v=v, alpha=alpha), {"g" if ndir == 1 else "g/g_rev": gates, "gk": gk})
    (xs, xt), (fs, ft) = _aux_shapes(q, ndir, backend)
    if q.shape[1] == 0:
        return q.new_zeros(q.shape), q.new_zeros(xs, dtype=xt), q.new_zeros(fs, dtype=ft)
    with torch.autocast(q.device.type, enabled=False):
        if backend == "triton":
            tri = _triton_module()
            o, x, fro = tri.gka_triton_forward(
                q.contiguous(), k.contiguous(), v.contiguous(), alpha.contiguous(), gates.float().contiguous(),
                int(dir_base), float(ridge_ratio), int(num_iter), float(scale), _kernel_config(config, q, k, v))
            return o.contiguous(), x, fro
        outs, xs_ = [], []
        for s in range(ndir):
            rev = dir_base + s == 1
            if backend == "reference":
                outs.append(gka_scan_reference(q, k, v, alpha, gates[s], gk, ridge_ratio, scale, rev))
            else:
                o, x = gka_chunked_forward(q, k, v, alpha, gates[s], gk, ridge_ratio, num_iter, scale, rev)
                outs.append(o)
                xs_.append(x)
        acc = torch.promote_types(q.dtype, torch.float32)
        o = outs[0] if ndir == 1 else (0.5 * (outs[0].to(acc) + outs[1].to(acc))).to(q.dtype)
        x = torch.stack(xs_) if xs_ else q.new_zeros(xs, dtype=xt)
        return o.contiguous(), x, q.new_zeros(fs, dtype=ft)


def _backward(do, q, k, v, alpha, gates, gk, x, fro, dir_base, ridge_ratio, num_iter, scale, sequential, backend,
              config):
    ndir = gates.shape[0]
    empty_gk = q.new_zeros((0,), dtype=torch.float32)  # the dgk output when there is no gk
    if q.shape[1] == 0:
        return (torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(alpha),
                torch.zeros_like(gates), torch.zeros_like(gk) if gk is not None else empty_gk)
    with torch.autocast(q.device.type, enabled=False):
        if backend == "triton":
            dq, dk, dv, da, dg = _triton_module().gka_triton_backward(
                q.contiguous(), k.contiguous(), v.contiguous(), alpha.contiguous(), gates.float().contiguous(),
                x, fro, do.contiguous(), int(dir_base), float(ridge_ratio), int(num_iter), float(scale),
                bool(sequential), _kernel_config(config, q, k, v))
            return dq, dk, dv, da, dg.to(gates.dtype), empty_gk
        do_dir = do if ndir == 1 else 0.5 * do.to(torch.promote_types(do.dtype, torch.float32))
        total, dgates, dgk = None, [], None
        for s in range(ndir):
            rev = dir_base + s == 1
            if backend == "reference":
                grads = _reference_grads(do_dir, q, k, v, alpha, gates[s], gk, ridge_ratio, scale, rev)
            else:
                grads = gka_chunked_backward(do_dir, q, k, v, alpha, gates[s], gk, x[s], ridge_ratio, num_iter,
                                             scale, rev)
            total = list(grads[:4]) if total is None else [a + b for a, b in zip(total, grads[:4])]
            dgates.append(grads[4])
            if gk is not None:
                dgk = grads[5] if dgk is None else dgk + grads[5]
        dq, dk, dv, da = (t.to(ref.dtype).contiguous() for t, ref in zip(total, (q, k, v, alpha)))
        return (dq, dk, dv, da, torch.stack(dgates).to(gates.dtype),
                empty_gk if dgk is None else dgk.to(gk.dtype).contiguous())


def _reference_grads(do, q, k, v, alpha, g, gk, ridge_ratio, scale, reverse):
    """The reference differentiated by autograd (re-run here: its forward op keeps nothing)."""
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v, alpha, g)]  # (its compute dtype)
    if gk is not None:
        leaves.append(gk.detach().double().requires_grad_())
    with autograd_inside_op():
        o = gka_scan_reference(*leaves[:5], leaves[5] if gk is not None else None, ridge_ratio, scale, reverse)
        grads = torch.autograd.grad(o, leaves, do.to(o.dtype), allow_unused=True)
    return [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]


def _forward_one(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend, config):
    return no_alias(_forward(q, k, v, alpha, g.unsqueeze(0), gk, 1 if reverse else 0, ridge_ratio, num_iter, scale,
                             backend, config), (q, k, v, alpha, g, gk))


def _forward_bi(q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale, sequential_backward, backend, config):
    return no_alias(_forward(q, k, v, alpha, torch.stack([g, g_rev]), None, 0, ridge_ratio, num_iter, scale,
                             backend, config), (q, k, v, alpha, g, g_rev))


@torch.library.custom_op("gka_vision::gka_scan", mutates_args=())
def _gka_scan_op(q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, g: Tensor, gk: Optional[Tensor],
                 ridge_ratio: float, num_iter: int, scale: float, reverse: bool, backend: str,
                 config: str) -> Tuple[Tensor, Tensor, Tensor]:
    """One causal GKA scan: (o, x, fro); x and fro are what the backward op needs (see the module doc)."""
    return _forward_one(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend, config)


@torch.library.custom_op("gka_vision::gka_scan_bidirectional", mutates_args=())
def _gka_scan_bidirectional_op(q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, g: Tensor, g_rev: Tensor,
                               ridge_ratio: float, num_iter: int, scale: float, sequential_backward: bool,
                               backend: str, config: str) -> Tuple[Tensor, Tensor, Tensor]:
    """0.5 * (forward scan with g + reverse scan with g_rev): (o, x, fro), x and fro per direction."""
    return _forward_bi(q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale, sequential_backward, backend, config)


@torch.library.custom_op("gka_vision::gka_scan_backward", mutates_args=())
def _gka_scan_backward_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, gates: Tensor,
                          gk: Optional[Tensor], x: Tensor, fro: Tensor, dir_base: int, ridge_ratio: float,
                          num_iter: int, scale: float, sequential: bool, backend: str,
                          config: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dalpha, dgates [NDIR, B, T, H], dgk or an empty tensor) of both forward ops."""
    return no_alias(_backward(do, q, k, v, alpha, gates, gk, x, fro, dir_base, ridge_ratio, num_iter, scale,
                              sequential, backend, config), (do, q, k, v, alpha, gates, gk, x, fro))


def _fake_forward(q, ndir, backend):
    (xs, xt), (fs, ft) = _aux_shapes(q, ndir, backend)
    return q.new_empty(q.shape), q.new_empty(xs, dtype=xt), q.new_empty(fs, dtype=ft)


@_gka_scan_op.register_fake
def _(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend, config):
    return _fake_forward(q, 1, backend)


@_gka_scan_bidirectional_op.register_fake
def _(q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale, sequential_backward, backend, config):
    return _fake_forward(q, 2, backend)


@_gka_scan_backward_op.register_fake
def _(do, q, k, v, alpha, gates, gk, x, fro, dir_base, ridge_ratio, num_iter, scale, sequential, backend, config):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            torch.empty_like(alpha, memory_format=torch.contiguous_format),
            torch.empty_like(gates, memory_format=torch.contiguous_format),
            torch.empty_like(gk, memory_format=torch.contiguous_format) if gk is not None
            else q.new_empty((0,), dtype=torch.float32))


def _setup_one(ctx, inputs, output):
    q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend, config = inputs
    ctx.save_for_backward(q, k, v, alpha, g, gk, output[1], output[2])
    ctx.opts = (1 if reverse else 0, ridge_ratio, num_iter, scale, False, backend, config)


def _grads_one(ctx, do, backward_op):
    q, k, v, alpha, g, gk, x, fro = ctx.saved_tensors
    dq, dk, dv, da, dgates, dgk = backward_op(do, q, k, v, alpha, g.unsqueeze(0), gk, x, fro, *ctx.opts)
    return dq, dk, dv, da, dgates[0], (dgk if gk is not None else None), None, None, None, None, None, None


def _backward_one(ctx, do, _dx, _dfro):
    return _grads_one(ctx, do, torch.ops.gka_vision.gka_scan_backward)


def _setup_bi(ctx, inputs, output):
    q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale, sequential, backend, config = inputs
    ctx.save_for_backward(q, k, v, alpha, g, g_rev, output[1], output[2])
    ctx.opts = (0, ridge_ratio, num_iter, scale, sequential, backend, config)


def _grads_bi(ctx, do, backward_op):
    q, k, v, alpha, g, g_rev, x, fro = ctx.saved_tensors
    dq, dk, dv, da, dgates, _ = backward_op(do, q, k, v, alpha, torch.stack([g, g_rev]), None, x, fro, *ctx.opts)
    return dq, dk, dv, da, dgates[0], dgates[1], None, None, None, None, None, None


def _backward_bi(ctx, do, _dx, _dfro):
    return _grads_bi(ctx, do, torch.ops.gka_vision.gka_scan_backward)


_gka_scan_op.register_autograd(_backward_one, setup_context=_setup_one)
_gka_scan_bidirectional_op.register_autograd(_backward_bi, setup_context=_setup_bi)


# ---- eager calls without torch.library's dispatch ----------------------------------------------------------
# A training step that waits on the host (small images, hierarchical models) pays for every layer between Python and
# the kernels: on the H200's host a bidirectional scan's forward and backward cost 1790 us through the custom op and
# its registered autograd against 1072 us through the kernels' plain autograd.Function (docs/benchmarks.md "Eager
# scan calls"). In eager mode with the Triton backend the public functions call the same implementation
# (`_forward`, `_backward`, the ops' own setup_context) through `_EagerScan`; under torch.compile, torch.export,
# torch.jit tracing, a dispatch mode (a selective checkpoint policy, FakeTensorMode) or a functorch transform they
# call the custom op, which those need.

class _EagerScan(torch.autograd.Function):
    """forward(impl, setup_context, grads, *op_args): impl(*op_args) -> (o, x, fro), saved as the op's autograd
    saves them (setup_context); backward: grads(ctx, do, _backward)."""

    @staticmethod
    def forward(ctx, impl, setup_context, grads, *args):
        out = impl(*args)
        setup_context(ctx, args, out)
        ctx.grads = grads
        ctx.mark_non_differentiable(out[1], out[2])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, _dx, _dfro):
        return (None, None, None) + ctx.grads(ctx, do, _backward)


def _eager_one(*args):
    return _EagerScan.apply(_forward_one, _setup_one, _grads_one, *args)


def _eager_bi(*args):
    return _EagerScan.apply(_forward_bi, _setup_bi, _grads_bi, *args)


def _eager_call(backend: str, q: Tensor) -> bool:
    """Whether a scan call goes through `_EagerScan` instead of the custom op (see above)."""
    if backend != "triton" or type(q) is not torch.Tensor:  # tensor subclasses (FakeTensor, DTensor) take the op
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return torch._C._len_torch_dispatch_stack() == 0 and not torch._C._are_functorch_transforms_active()


# ---- public API ------------------------------------------------------------------------------------------

def gka_scan(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None,
             reverse=False, backend="auto", config=None):
    """One causal GKA scan (reverse=True scans from the last token to the first). See module doc."""
    _check_inputs(q, k, v, alpha, {"g": g, "gk": gk})
    backend = resolve_backend(backend, q.device)
    if backend == "triton" and gk is not None:  # the kernels have no separate key gate: the torch backend does it
        backend = "torch"
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if _onnx_exporting():
        with torch.autocast(device_type=q.device.type, enabled=False):
            return gka_scan_chunked(q, k, v, alpha, g, gk, float(ridge_ratio), int(num_iter), scale, bool(reverse))
    # the op computes in its own precision (its implementations turn autocast off): no autocast region here,
    # which would show up as a wrapper node in exported graphs
    op = _eager_one if _eager_call(backend, q) else torch.ops.gka_vision.gka_scan
    return call_scan(op, _setup_one, q, k, v, alpha, g, gk, float(ridge_ratio), int(num_iter), scale, bool(reverse),
                     backend, _config_spec(config))[0]


def gka_scan_bidirectional(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                           backend="auto", sequential_backward=False, config=None):
    """Average of a forward scan with gate g and a reverse scan with gate g_rev (docs/gka_spec.md section 5).

    On CUDA the triton backend runs both directions in one launch per kernel; sequential_backward=True
    makes its backward run them one after the other (half its transient memory; same results). The other
    backends always run the directions one after the other.
    """
    _check_inputs(q, k, v, alpha, {"g": g, "g_rev": g_rev})
    backend = resolve_backend(backend, q.device)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if _onnx_exporting():
        with torch.autocast(device_type=q.device.type, enabled=False):
            fwd = gka_scan_chunked(q, k, v, alpha, g, None, float(ridge_ratio), int(num_iter), scale, False)
            bwd = gka_scan_chunked(q, k, v, alpha, g_rev, None, float(ridge_ratio), int(num_iter), scale, True)
            acc = torch.promote_types(q.dtype, torch.float32)
            return (0.5 * (fwd.to(acc) + bwd.to(acc))).to(q.dtype)
    op = _eager_bi if _eager_call(backend, q) else torch.ops.gka_vision.gka_scan_bidirectional
    return call_scan(op, _setup_bi, q, k, v, alpha, g, g_rev, float(ridge_ratio), int(num_iter), scale,
                     bool(sequential_backward), backend, _config_spec(config))[0]
