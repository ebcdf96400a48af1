"""`gka_scan`: the single entry point of the GKA core; every backend implements this contract.

    o = gka_scan(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None,
                 reverse=False, backend="auto")

q, k, v [B, T, H, D] (fp32/bf16/fp16; q, k L2-normalised, k and v already scaled by beta), alpha [B, T, H],
g [B, T, H] fp32 log forget gate (<= 0) of the value state, gk the gate of the key covariance (default g).
Returns o [B, T, H, D] in q's dtype. GKA.md section 1 with the Chebyshev solve of section 2.

Backends: "reference" (float64, token by token, exact solve), "torch" (chunked, any device),
"triton" (CUDA kernels in `gka_kernels`), "auto" (triton on CUDA when importable, else torch).
"""
import os
import warnings

import torch

from .gka_chunked import gka_scan_chunked
from .gka_reference import gka_scan_reference

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
    return gka_kernels if hasattr(gka_kernels, "gka_scan_triton") else None


_warned_fallback = False


def _warn_fallback_once():
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn("gka_scan: backend='auto' on CUDA but gka_kernels (Triton) is not importable; "
                      "using the much slower 'torch' backend. Install the package (pip install -e .) "
                      "so that the kernels/ folder imports as gka_kernels.", RuntimeWarning, stacklevel=3)


def _resolve_backend(backend, device):
    if backend not in BACKENDS:
        raise ValueError(f"gka_scan: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        if device.type == "cuda":
            if _triton_module() is not None:
                return "triton"
            _warn_fallback_once()
        return "torch"
    if backend == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError("gka_scan: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
        if _triton_module() is None:
            raise RuntimeError("gka_scan: backend='triton' requested but gka_kernels.gka_scan_triton "
                               "is not available (is triton installed?)")
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
    if _debug_checks:
        for name, t in [("q", q), ("k", k), ("v", v), ("alpha", alpha)] + list(gates.items()):
            if t is not None and not torch.isfinite(t).all():
                raise FloatingPointError(f"gka_scan: input {name} contains NaN or inf")
        for name, t in gates.items():
            if t is not None and (t > 0).any():
                raise ValueError(f"gka_scan: log forget gate {name} must be <= 0")


class GKAScanFunction(torch.autograd.Function):
    """Opaque wrapper used only while tracing (fvcore sees `prim::PythonOp.GKAScanFunction`).

    Inputs: q, k, v, alpha, g, g_rev (g_rev is None for one direction) and the static options.
    """

    @staticmethod
    def forward(ctx, q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale, reverse, backend):
        if g_rev is None:
            return _scan(q, k, v, alpha, g, None, ridge_ratio, num_iter, scale, reverse, backend)
        return 0.5 * (_scan(q, k, v, alpha, g, None, ridge_ratio, num_iter, scale, False, backend)
                      + _scan(q, k, v, alpha, g_rev, None, ridge_ratio, num_iter, scale, True, backend))

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - tracing is forward only
        raise RuntimeError("GKAScanFunction is a tracing-only wrapper; it has no backward")


def _scan(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend):
    if backend == "reference":
        return gka_scan_reference(q, k, v, alpha, g, gk, ridge_ratio, scale, reverse)
    if backend == "triton" and gk is None:  # the kernels have no separate key gate: the torch backend does it
        return _triton_module().gka_scan_triton(q, k, v, alpha, g, ridge_ratio=ridge_ratio,
                                               num_iter=num_iter, scale=scale, reverse=reverse)
    return gka_scan_chunked(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse)


def gka_scan(q, k, v, alpha, g, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None,
             reverse=False, backend="auto"):
    """One causal GKA scan (reverse=True scans from the last token to the first). See module doc."""
    _check_inputs(q, k, v, alpha, {"g": g, "gk": gk})
    backend = _resolve_backend(backend, q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        if torch.jit.is_tracing():
            if gk is not None:
                raise NotImplementedError("gka_scan: tracing with a separate gk gate is not supported")
            return GKAScanFunction.apply(q, k, v, alpha, g, None, ridge_ratio, num_iter, scale,
                                         reverse, backend)
        return _scan(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, reverse, backend)


def gka_scan_bidirectional(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                           backend="auto", sequential_backward=False):
    """Average of a forward scan with gate g and a reverse scan with gate g_rev (GKA.md section 5).

    On CUDA the triton backend runs both directions in one launch per kernel; sequential_backward=True
    makes its backward run them one after the other (half its transient memory; same results). The other
    backends always run the directions one after the other.
    """
    _check_inputs(q, k, v, alpha, {"g": g, "g_rev": g_rev})
    backend = _resolve_backend(backend, q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        if torch.jit.is_tracing():
            return GKAScanFunction.apply(q, k, v, alpha, g, g_rev, ridge_ratio, num_iter, scale,
                                         False, backend)
        if backend == "triton":
            return _triton_module().gka_scan_bidirectional_triton(
                q, k, v, alpha, g, g_rev, ridge_ratio=ridge_ratio, num_iter=num_iter, scale=scale,
                sequential_backward=sequential_backward)
        fwd = _scan(q, k, v, alpha, g, None, ridge_ratio, num_iter, scale, False, backend)
        bwd = _scan(q, k, v, alpha, g_rev, None, ridge_ratio, num_iter, scale, True, backend)
        return (0.5 * (fwd.float() + bwd.float())).to(q.dtype)
