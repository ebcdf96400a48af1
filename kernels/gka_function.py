"""Host code of the chunked GKA kernels: the kernel config, the forward and backward launch sets, the
autograd.Function, and the two public entry points.

    gka_triton_forward(q, k, v, alpha, gates, ...)          -> (o, x, fro)      launches of one forward
    gka_triton_backward(q, k, v, alpha, gates, x, fro, do, ...) -> (dq, dk, dv, dalpha, dgates)
    gka_scan_triton(q, k, v, alpha, g, *, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False, config=None)
    gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                                  sequential_backward=False, config=None)

Same contract as gka_vision.ops.gka_scan (docs/gka_spec.md sections 1-5). The bidirectional op runs both scan
directions in one launch per kernel (direction = a grid axis) and returns 0.5 * (forward + reverse).
`gates` is [NDIR, B, T, H] fp32 and dir_base 0 (forward scan first) or 1 (a single reverse scan).
Tuning travels as a `GKAKernelConfig` (None = `default_config(solve_dtype(q, k, v))`); nothing is read from the
environment except TRITON_INTERPRET, which Triton itself reads.
"""
import dataclasses
import functools
import os
import typing
from typing import Optional, Tuple

import torch

from .gka_chunk import (FRO2_FLOOR, RIDGE_FLOOR, _bwd_solve_kernel, _bwd_states_kernel, _fwd_solve_kernel,
                        _fwd_states_kernel, _gate_grad_kernel, _sum_directions_kernel)
from .host_math import cdiv, next_power_of_2

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Dot precisions (gka_chunk._dot): "bf16", "tf32", "tf32x3" (three tf32 products, fp32-accurate), "ieee", and
# "bf16x3" (three bf16 products of a hi/lo split, ~1e-5 relative error at half the tensor-core cost of tf32x3).
DOT_PRECISIONS = ("bf16", "bf16x3", "tf32", "tf32x3", "ieee")
SOLVE_KERNELS = ("fwd", "bwd", "both", "none")  # values of the per-solve-kernel options (paired_steps, folded_steps)


def parse_schedule(spec):
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
    if len(out) != 2 or any(p not in DOT_PRECISIONS for s in out for p in (s[0], s[3])) \
            or any(s[1] < 1 or s[2] < 0 or s[4] < 0 for s in out):
        raise ValueError(f"GKA Triton solve schedule {spec!r}: expected 'P1:n1+RxP2:n2/P1:n1+RxP2:n2' "
                         f"with P in {', '.join(DOT_PRECISIONS)} (e.g. 'tf32:20+1xtf32:20/tf32:20+1xtf32:30')")
    return out


@dataclasses.dataclass(frozen=True)
class GKAKernelConfig:
    """Tuning of the Triton GKA core (one object per call; `default_config(dtype)` gives the defaults).

    schedule: "P1:n1+RxP2:n2/P1:n1+RxP2:n2" for the forward solve x = A^-1 q, then the backward solve
        qbar = A^-1 xbar: n1 Chebyshev steps with P1 products, then R refinement rounds (residual with
        precision_hi products, then n2 Chebyshev steps with P2 products). n1 is the count for num_iter = 30 and
        moves with num_iter (n1 + num_iter - 30, at least 1). The backward solve needs more accuracy: the key
        and ridge gradients want qbar about kappa times more accurate than x (docs/kernels.md).
    precision_hi: the refinement residuals, ||H_t||_F and the forward read-out (q' can be 50x longer than q).
    precision_states: both chunk-state scans (forward H_p / S_p, also recomputed in the backward; reverse scan).
    precision_grad: the backward solve kernel's products outside the solve (read-out and covariance gradients).
    precision_lo: its four products without cancellation (dv's, k k^T of the ridge term, two ridge terms).
    chunk: tokens per chunk (BC) of the backward launches (None: 64 at padded head dim 64, 16 otherwise);
    fwd_chunk: tokens per chunk of the forward launches (its state scan and solve kernel; None: 64 at padded head
    dim 64, the backward's chunk otherwise). The forward hands the backward x and ||H_t||_F per token, so the two
    may chunk differently; 64-token chunks make the solves' products large enough for wgmma (docs/kernels.md,
    "Registers, occupancy and chunk size");
    num_warps: warps per program of the two solve kernels (None: 4 up to head dim 64, 8 above);
    state_warps: the same for the two chunk-state scans;
    state_cols: state columns per program of the two chunk-state scans; max_regs: register cap of the solve
    kernels (None: the compiler's choice); prefetch: the state scans issue the next chunk's loads early;
    lean_solve: the solve kernels keep the right-hand side and the running solution of the refinement rounds in
    memory instead of registers (fewer registers per program, one extra fp32 buffer in the backward);
    split_backward: the backward solve kernel runs as two launches (read-out gradients + second solve, then the
    covariance gradients), each with fewer live registers (one extra fp32 buffer); None: split where the backward
    runs on chunks of 64 tokens or more (in one launch its three phases spill there);
    tail_tile: the last chunk of a solve launch runs on a smaller tile when it holds at most half a chunk
    (`tail_rows`; at T = 197 the forward's last 64-token chunk has 5 tokens);
    paired_steps: which solve kernels run their Chebyshev steps two per loop iteration with the iterates updated
    in place ("fwd", "bwd", "both", "none"; the same results bit for bit, docs/kernels.md "Paired steps");
    folded_steps: which solve kernels run folded Chebyshev steps, with six elementwise operations per element
    instead of eight, paired where paired_steps says so ("fwd", "bwd", "both", "none"; the same values in exact
    arithmetic, other roundings; docs/kernels.md "Folded steps");
    exact_operands: bf16x3 products drop the products with the zero low part of an operand loaded from a bf16
    tensor (k, v, and the upstream gradient): one or two bf16 products instead of three, the same sums, the same
    bits (docs/kernels.md "Exact bf16 operands").
    """
    schedule: str = "bf16:15+3xbf16:10/bf16:15+2xbf16:15"
    precision_hi: str = "bf16x3"
    precision_states: str = "bf16x3"
    precision_grad: str = "bf16x3"
    precision_lo: str = "bf16x3"
    chunk: Optional[int] = None
    fwd_chunk: Optional[int] = None
    num_warps: Optional[int] = None
    state_warps: Optional[int] = None
    state_cols: int = 32
    max_regs: Optional[int] = None
    prefetch: bool = True
    lean_solve: bool = False
    split_backward: Optional[bool] = None
    tail_tile: bool = True
    paired_steps: str = "fwd"
    folded_steps: str = "fwd"
    exact_operands: bool = True

    def __post_init__(self):
        parse_schedule(self.schedule)
        for name in ("paired_steps", "folded_steps"):
            if getattr(self, name) not in SOLVE_KERNELS:
                raise ValueError(f"GKAKernelConfig.{name}={getattr(self, name)!r}: one of {', '.join(SOLVE_KERNELS)}")
        for name in ("precision_hi", "precision_states", "precision_grad", "precision_lo"):
            if getattr(self, name) not in DOT_PRECISIONS:
                raise ValueError(f"GKAKernelConfig.{name}={getattr(self, name)!r}: one of {', '.join(DOT_PRECISIONS)}")
        for name in ("chunk", "fwd_chunk", "state_cols"):
            val = getattr(self, name)
            if name in ("chunk", "fwd_chunk") and val is None:
                continue
            if not (isinstance(val, int) and val >= 16 and val & (val - 1) == 0):
                raise ValueError(f"GKAKernelConfig.{name}={val!r}: a power of two >= 16")
        for f in dataclasses.fields(self):
            kind, optional = _field_kind(f)
            val = getattr(self, f.name)
            if kind is bool and not isinstance(val, bool) and not (optional and val is None):
                raise ValueError(f"GKAKernelConfig.{f.name}={val!r}: True or False" + (" (or None)" if optional else ""))
        for name in ("num_warps", "state_warps"):
            if getattr(self, name) not in (None, 1, 2, 4, 8, 16):
                raise ValueError(f"GKAKernelConfig.{name}={getattr(self, name)!r}: 1, 2, 4, 8 or 16 (or None)")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_spec(self, full: bool = False) -> str:
        """'key=value,...' of the fields that differ from the class defaults ('' for the defaults), or of every
        field (full=True: the same config whatever base from_spec parses it on)."""
        base = GKAKernelConfig()
        return ",".join(f"{f.name}={_fmt(getattr(self, f.name))}" for f in dataclasses.fields(self)
                        if full or getattr(self, f.name) != getattr(base, f.name))

    @classmethod
    def from_spec(cls, spec: str, base: Optional["GKAKernelConfig"] = None) -> "GKAKernelConfig":
        """Parse 'key=value,...' (field names of this class; 'none' for None) on top of `base` (the defaults)."""
        base = base or cls()
        if not spec:
            return base
        fields = {f.name: f for f in dataclasses.fields(cls)}
        changes = {}
        for item in spec.split(","):
            key, sep, val = item.partition("=")
            if not sep or key not in fields:
                raise ValueError(f"GKAKernelConfig spec {spec!r}: unknown or malformed item {item!r} "
                                 f"(keys: {', '.join(fields)})")
            kind, optional = _field_kind(fields[key])
            if (optional or kind is int) and val.lower() == "none":
                changes[key] = None
            elif kind is int:
                changes[key] = int(val)
            elif kind is bool:
                if val.lower() not in _BOOL_WORDS:
                    raise ValueError(f"GKAKernelConfig spec {spec!r}: {key}={val!r} is not one of "
                                     f"{', '.join(_BOOL_WORDS)}")
                changes[key] = _BOOL_WORDS[val.lower()]
            else:
                changes[key] = val
        return dataclasses.replace(base, **changes)


def _field_kind(field) -> Tuple[type, bool]:
    """(type, whether None is allowed) of a GKAKernelConfig field, from its annotation: Optional[int] -> (int, True);
    None means "chosen per launch" (the chunk sizes and warps by the head dim, split_backward by the chunk size)."""
    args = typing.get_args(field.type)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return field.type, False


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _fmt(v):
    return "none" if v is None else str(int(v)) if isinstance(v, bool) else str(v)


# bf16 / fp16 inputs need 1e-2 forward and 3e-2 gradient accuracy (their own rounding is 2e-3 to 4e-3): the forward
# solve drops one refinement round there and the backward solve runs 36 steps instead of 45 (docs/kernels.md,
# "Precision by input dtype").
_HALF = GKAKernelConfig(schedule="bf16:15+2xbf16:12/bf16:12+2xbf16:12")
_DEFAULTS = {torch.float32: GKAKernelConfig(), torch.float16: _HALF, torch.bfloat16: _HALF}


def default_config(dtype: torch.dtype) -> GKAKernelConfig:
    """The kernel config used when a call passes none, chosen by `solve_dtype` of the inputs."""
    return _DEFAULTS.get(dtype, _DEFAULTS[torch.float32])


def solve_dtype(q, k, v) -> torch.dtype:
    """The dtype whose accuracy target the default config meets: the least precise of q, k and v. Under CUDA
    autocast v comes from a bf16 projection while F.normalize hands q and k over in fp32; the output then
    feeds bf16 layers, so the bf16 target holds (docs/kernels.md, "Precision by input dtype")."""
    for t in (v, k, q):
        if t.dtype in (torch.bfloat16, torch.float16):
            return t.dtype
    return q.dtype


def padded_head_dim(head_dim: int) -> int:
    """The kernels' tile width BD for a head dim: the next power of two, at least 16 (the tail is masked)."""
    return max(16, next_power_of_2(head_dim))


def chunk_sizes(config: GKAKernelConfig, head_dim: int) -> Tuple[int, int]:
    """(forward, backward) tokens per chunk of `config` at this head dim: its fwd_chunk and chunk, or where they are
    None 64 at padded head dim 64 (measured faster there only, docs/kernels.md) and 16 elsewhere (the forward
    then takes the backward's chunk)."""
    padded_64 = padded_head_dim(head_dim) == 64
    bwd = config.chunk or (64 if padded_64 else 16)
    return config.fwd_chunk or (64 if padded_64 else bwd), bwd


def split_backward(config: GKAKernelConfig, head_dim: int) -> bool:
    """Whether the backward solve kernel runs as two launches: config.split_backward, or where that is None, wherever
    the backward's chunks have 64 tokens or more (in one launch its three phases spill there, docs/kernels.md)."""
    if config.split_backward is not None:
        return config.split_backward
    return chunk_sizes(config, head_dim)[1] >= 64


def tail_rows(T: int, chunk: int, tail_tile: bool = True) -> int:
    """Rows of the last chunk's tile in a solve launch of `chunk`-token chunks (the TAIL of the solve kernels): the
    next power of two >= the tokens left in that chunk (at least 16) when that is at most half a chunk, else `chunk`."""
    left = T - (cdiv(T, chunk) - 1) * chunk
    rows = max(16, next_power_of_2(max(left, 1)))
    return rows if tail_tile and 2 * rows <= chunk else chunk


@functools.lru_cache(maxsize=256)
def _launch(config: "GKAKernelConfig", D: int) -> "_Launch":
    """_Launch(config, D), built once per (config, head dim): the host code runs on every call of the op."""
    return _Launch(config, D)


class _Launch:
    """A config resolved for one head dim (and for the interpreter, which computes every dot in fp32)."""

    def __init__(self, config: GKAKernelConfig, D: int):
        self.BD = padded_head_dim(D)
        self.BC_fwd, self.BC = chunk_sizes(config, D)
        self.BN = min(self.BD, config.state_cols)
        self.warps = config.num_warps or (4 if self.BD <= 64 else 8)
        self.state_warps = config.state_warps or (4 if self.BD <= 64 else 8)
        fwd, bwd = parse_schedule(config.schedule)
        prec = lambda p: "ieee" if INTERPRET else p  # noqa: E731  (bf16 dots are wrong in the interpreter)
        self.fwd_sched = (prec(fwd[0]), fwd[1], fwd[2], prec(fwd[3]), fwd[4])
        self.bwd_sched = (prec(bwd[0]), bwd[1], bwd[2], prec(bwd[3]), bwd[4])
        self.hi, self.states = prec(config.precision_hi), prec(config.precision_states)
        self.grad, self.lo = prec(config.precision_grad), prec(config.precision_lo)
        self.prefetch = config.prefetch
        self.lean = config.lean_solve
        self.split = split_backward(config, D)
        self.tail_tile = config.tail_tile
        self.paired_fwd = config.paired_steps in ("fwd", "both")
        self.paired_bwd = config.paired_steps in ("bwd", "both")
        self.folded_fwd = config.folded_steps in ("fwd", "both")
        self.folded_bwd = config.folded_steps in ("bwd", "both")
        self.exact_operands = config.exact_operands
        self.solve_opts = dict(num_warps=self.warps)
        if config.max_regs is not None and not INTERPRET:
            self.solve_opts["maxnreg"] = config.max_regs

    def iters(self, num_iter, backward):
        """(P_first, first-round steps, rounds, P_refine, steps per round) of the forward or backward solve."""
        p1, n1, r, p2, n2 = self.bwd_sched if backward else self.fwd_sched
        return p1, max(n1 + num_iter - 30, 1), r, p2, n2

    def exact_operand(self, t, scale=1.0):
        """Whether `t` times `scale` holds bf16 values as the kernels see it (exact_operands: its bf16x3 products
        drop the zero low part): a bf16 tensor, scaled by 1 or 1/2."""
        return self.exact_operands and t.dtype == torch.bfloat16 and scale in (1.0, 0.5)


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


def _sum_directions(t, dtype):
    """[NDIR, ...] per-direction fp32 results -> their sum in `dtype` (the bidirectional op already scaled by
    1/NDIR), one pass."""
    out = torch.empty(t.shape[1:], dtype=dtype, device=t.device)
    n = out.numel()
    if n:
        _sum_directions_kernel[(cdiv(n, 1024),)](t, out, n, NDIR=t.shape[0], BLOCK=1024, num_warps=4)
    return out


def _chunk_states(k, v, gates, dir_base, L, BC):
    """Chunk-start states H_p and S_p of BC-token chunks, [NDIR, B*H, NC, BD, BD] fp32 each: in the forward, and
    again in the backward (recomputing them is one cheap launch; keeping them would cost 8x the memory of x)."""
    B, T, H, D = (int(s) for s in k.shape)
    ndir, NC = int(gates.shape[0]), cdiv(T, BC)
    hk = torch.empty(ndir, B * H, NC, L.BD, L.BD, dtype=torch.float32, device=k.device)
    hv = torch.empty_like(hk)
    _fwd_states_kernel[(B * H, ndir, L.BD // L.BN)](k, v, gates, hk, hv, T, H, B * H, B * T * H, NC, dir_base,
                                                    D=D, BD=L.BD, BC=BC, BN=L.BN, PREC=L.states,
                                                    PREFETCH=L.prefetch, K_EXACT=L.exact_operand(k),
                                                    V_EXACT=L.exact_operand(v), num_warps=L.state_warps)
    return hk, hv


def gka_triton_forward(q, k, v, alpha, gates, dir_base=0, ridge_ratio=0.02, num_iter=30, scale=None, config=None):
    """Forward launches: (o [B, T, H, D] in q's dtype, x [NDIR, B, T, H, D] fp32, ||H_t||_F [NDIR, B, T, H] fp32).

    q, k, v, alpha must be contiguous and gates [NDIR, B, T, H] contiguous fp32 (what the backward takes too);
    x and ||H_t||_F are what gka_triton_backward needs besides the inputs.
    """
    _check(q, k, v, alpha, gates)
    B, T, H, D = (int(s) for s in q.shape)
    ndir = int(gates.shape[0])
    # plain Python scalars of fixed type: a float that arrives as a 0-d tensor, numpy or fp64 scalar, or an int
    # as a float, would otherwise give the kernels a different argument type (and a re-compile, or fp64 math)
    dir_base, ridge_ratio, num_iter = int(dir_base), float(ridge_ratio), int(num_iter)
    scale = D ** -0.5 if scale is None else float(scale)
    L = _launch(config or default_config(solve_dtype(q, k, v)), D)
    NC = cdiv(T, L.BC_fwd)
    p1, n1, rounds, p2, n2 = L.iters(num_iter, False)
    f32 = dict(dtype=torch.float32, device=q.device)
    hk, hv = _chunk_states(k, v, gates, dir_base, L, L.BC_fwd)
    o = torch.empty(ndir, B, T, H, D, **f32)
    x = torch.empty(ndir, B, T, H, D, **f32)
    fro = torch.empty(ndir, B, T, H, **f32)
    _fwd_solve_kernel[(NC, B * H, ndir)](q, k, v, alpha, gates, hk, hv, o, x, fro,
                                         T, H, B * H, B * T * H, NC, dir_base, n1, rounds, n2,
                                         ridge_ratio, float(RIDGE_FLOOR), float(FRO2_FLOOR), scale, 1.0 / ndir,
                                         D=D, BD=L.BD, BC=L.BC_fwd, TAIL=tail_rows(T, L.BC_fwd, L.tail_tile),
                                         PREC_FIRST=p1, PREC=p2, PREC_HI=L.hi, LEAN=L.lean, PAIRED=L.paired_fwd,
                                         FOLDED=L.folded_fwd, K_EXACT=L.exact_operand(k),
                                         V_EXACT=L.exact_operand(v), **L.solve_opts)
    return _sum_directions(o, q.dtype), x, fro


def gka_triton_backward(q, k, v, alpha, gates, x, fro, do, dir_base=0, ridge_ratio=0.02, num_iter=30, scale=None,
                        sequential=False, config=None):
    """Backward launches for the outputs of gka_triton_forward (same inputs, same config):
    (dq, dk, dv, dalpha) in the inputs' dtypes and dgates [NDIR, B, T, H] fp32.

    sequential=True (two directions only) runs the launches once per direction: half the transient
    chunk-state and per-direction gradient buffers, same results.
    """
    D = int(q.shape[-1])
    dir_base = int(dir_base)
    scale = D ** -0.5 if scale is None else float(scale)
    L = _launch(config or default_config(solve_dtype(q, k, v)), D)
    do = do.contiguous()
    args = (q, k, v, alpha, do, float(ridge_ratio), int(num_iter), scale, 1.0 / int(gates.shape[0]), L)
    if sequential and gates.shape[0] == 2:
        grads = list(_backward(*args, gates[:1], x[:1], fro[:1], dir_base=0))
        rev = _backward(*args, gates[1:], x[1:], fro[1:], dir_base=1)
        for acc, r in zip(grads[:4], rev[:4]):  # [1, ...] each: accumulate in place, no second buffer
            acc += r
        grads[4] = torch.cat([grads[4], rev[4]])
    else:
        grads = _backward(*args, gates, x, fro, dir_base=dir_base)
    dq, dk, dv, da, dg = grads
    return (_sum_directions(dq, q.dtype), _sum_directions(dk, k.dtype), _sum_directions(dv, v.dtype),
            _sum_directions(da, alpha.dtype), dg)


def _backward(q, k, v, alpha, do, ridge_ratio, num_iter, scale, out_scale, L, gates, x, fro, dir_base):
    """The backward launches for the directions in `gates` ([NDIR, B, T, H]; the first is dir_base):
    per-direction fp32 (dq, dk, dv, dalpha) [NDIR, ...] and dg [NDIR, B, T, H]."""
    B, T, H, D = (int(s) for s in q.shape)
    ndir = int(gates.shape[0])
    NC, NBH, BTH = cdiv(T, L.BC), B * H, B * T * H
    p1, n1, rounds, p2, n2 = L.iters(num_iter, True)
    f32 = dict(dtype=torch.float32, device=q.device)
    # per-direction results, every element written once by the solve kernel (plain stores)
    dq = torch.empty(ndir, B, T, H, D, **f32)
    dk = torch.empty(ndir, B, T, H, D, **f32)
    dv = torch.empty(ndir, B, T, H, D, **f32)
    da = torch.empty(ndir, B, T, H, **f32)
    dG = torch.empty(ndir, B, T, H, **f32)
    dgp = torch.empty(L.BD // L.BN, ndir, B, T, H, **f32)
    hk, hv = _chunk_states(k, v, gates, dir_base, L, L.BC)
    # U_c / W_c overwrite H_p / S_p slot by slot (each slot belongs to one program): 2 buffers, not 4
    u, w = hk, hv
    # qbar: the lean solve's running solution and the split kernel's hand-over (unused otherwise)
    qb = torch.empty_like(dq) if L.lean or L.split else dq
    for part in (1, 2) if L.split else (0,):
        _bwd_solve_kernel[(NC, NBH, ndir)](q, k, v, alpha, gates, hk, hv, x, fro, do,
                                           dq, dk, dv, da, dG, u, w, qb,
                                           T, H, NBH, BTH, NC, dir_base, n1, rounds, n2,
                                           ridge_ratio, float(RIDGE_FLOOR), scale, out_scale,
                                           D=D, BD=L.BD, BC=L.BC, TAIL=tail_rows(T, L.BC, L.tail_tile),
                                           PREC_FIRST=p1, PREC=p2, PREC_HI=L.hi, PREC_GRAD=L.grad, PREC_LO=L.lo,
                                           LEAN=L.lean, PART=part, PAIRED=L.paired_bwd,
                                           FOLDED=L.folded_bwd, K_EXACT=L.exact_operand(k),
                                           V_EXACT=L.exact_operand(v), DO_EXACT=L.exact_operand(do, out_scale),
                                           **L.solve_opts)
    _bwd_states_kernel[(NBH, ndir, L.BD // L.BN)](k, v, gates, u, w, dk, dv, dgp,
                                                  T, H, NBH, BTH, NC, dir_base,
                                                  D=D, BD=L.BD, BC=L.BC, BN=L.BN, PREC=L.states,
                                                  PREFETCH=L.prefetch, K_EXACT=L.exact_operand(k),
                                                  V_EXACT=L.exact_operand(v), num_warps=L.state_warps)
    del hk, hv, u, w, qb  # free the chunk states before the direction sums allocate
    # dL/dG^glob (read terms of the solve kernel minus the write terms of the state scan), summed over the later
    # scan positions: the gate gradient, in place of dG
    _gate_grad_kernel[(NBH, ndir)](dG, dgp, dG, T, H, BTH, ndir * BTH, dir_base, NPART=int(dgp.shape[0]),
                                   BLOCK=256, num_warps=4)
    return dq, dk, dv, da, dG


class GKATritonFunction(torch.autograd.Function):
    """autograd around gka_triton_forward / gka_triton_backward (gates [NDIR, B, T, H] fp32)."""

    @staticmethod
    def forward(ctx, q, k, v, alpha, gates, dir_base, ridge_ratio, num_iter, scale, sequential_backward=False,
                config=None):
        q, k, v, alpha = (t.contiguous() for t in (q, k, v, alpha))
        gates = gates.float().contiguous()
        scale = None if scale is None else float(scale)
        o, x, fro = gka_triton_forward(q, k, v, alpha, gates, int(dir_base), float(ridge_ratio), int(num_iter), scale,
                                       config)
        ctx.save_for_backward(q, k, v, alpha, gates, x, fro)
        ctx.opts = dict(dir_base=int(dir_base), ridge_ratio=float(ridge_ratio), num_iter=int(num_iter), scale=scale,
                        sequential=bool(sequential_backward), config=config)
        return o

    @staticmethod
    def backward(ctx, do):
        grads = gka_triton_backward(*ctx.saved_tensors, do, **ctx.opts)
        return grads + (None,) * 6


def gka_scan_triton(q, k, v, alpha, g, *, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False, config=None):
    """One causal GKA scan on the Triton kernels (reverse=True scans from the last token to the first)."""
    return GKATritonFunction.apply(q, k, v, alpha, g.unsqueeze(0), 1 if reverse else 0, float(ridge_ratio),
                                   int(num_iter), scale, False, config)


def gka_scan_bidirectional_triton(q, k, v, alpha, g, g_rev, *, ridge_ratio=0.02, num_iter=30, scale=None,
                                  sequential_backward=False, config=None):
    """0.5 * (forward scan with gate g + reverse scan with gate g_rev), both directions in one launch.

    sequential_backward=True runs the backward's launches once per direction instead (the forward is
    unchanged): half the transient memory of the backward (chunk states, per-direction gradients), for
    large images; same results.
    """
    if g.shape != g_rev.shape:
        raise ValueError(f"gka_scan_bidirectional_triton: g {tuple(g.shape)} and g_rev {tuple(g_rev.shape)} differ")
    return GKATritonFunction.apply(q, k, v, alpha, torch.stack([g.float(), g_rev.float()]), 0, float(ridge_ratio),
                                   int(num_iter), scale, bool(sequential_backward), config)
