"""Chunked GKA in PyTorch (docs/gka_spec.md sections 2-4): runs on any device, any T, any head dim.

Layout inside this file: [B, H, N, C, D] with N chunks of C tokens (T padded with zero tokens at the end,
which a causal scan never reads back). Arithmetic is fp32 for fp32/bf16/fp16 inputs, fp64 for fp64.

Backward is the implicit one of docs/gka_spec.md section 4, obtained from autograd with one trick:
x is solved without grad, then
    x_out = x + SolveInBackward(q - A(theta) x)
where SolveInBackward returns zeros in the forward and applies A^-1 (a second Chebyshev solve) in the
backward. So x_out == x, dL/dq = A^-1 xbar = qbar, and dL/dtheta = -qbar^T (dA/dtheta) x, the exact-solution
gradients (covariance, ridge through ||H_t||_F, gates, keys) from one differentiable application of A.
"""
import torch

from ._op_utils import autograd_inside_op
from .gka_reference import RIDGE_FLOOR

# The backward solve qbar = A^-1 xbar runs this many more Chebyshev steps than the forward. The key
# gradient is a difference of terms up to kappa (= 51) times larger than itself (it reads the small
# components of x and qbar along the keys), so qbar needs kappa times less error than x:
# log(51) / log(1 / 0.755) = 14 steps for the full factor; 10 measured enough to bring every gradient
# within 1e-3 of the exact solve at T = 1 (rank-one H, the tightest spectrum), where 0 gave 1.5e-2.
BACKWARD_EXTRA_ITERS = 10


def _chunk(x, C):
    """[B, T, H, *rest] -> [B, H, N, C, *rest], zero-padded at the end of T."""
    B, T, Hh = x.shape[:3]
    N = (T + C - 1) // C  # not -(-T // C): traced for ONNX, a negative floor division truncates there
    pad = N * C - T
    x = x.movedim(2, 1)
    if pad:
        x = torch.cat([x, x.new_zeros(B, Hh, pad, *x.shape[3:])], dim=2)
    return x.reshape(B, Hh, N, C, *x.shape[3:])


def _unchunk(x, T):
    """[B, H, N, C, D] -> [B, T, H, D]."""
    B, Hh, N, C, D = x.shape
    return x.reshape(B, Hh, N * C, D)[:, :, :T].movedim(1, 2)


def _decay_mask(G):
    """M[t, j] = exp(G_t - G_j) for j <= t else 0, from within-chunk cumulative log gates G [..., C]."""
    C = G.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=G.device).tril()
    diff = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf"))
    return diff.exp()


def _chunk_states(K, V, G):
    """States at each chunk start: sum over earlier tokens of exp(G_end - G_j) k_j v_j^T.

    K [B,H,N,C,Dk], V [B,H,N,C,Dv], G within-chunk cumsum [B,H,N,C]. Returns [B,H,N,Dk,Dv], the state
    *before* chunk n (zero for n = 0). With V = K this is the key covariance H_p of docs/gka_spec.md section 3.
    """
    B, Hh, N, C, Dk = K.shape
    g_last = G[..., -1:]                                    # [B,H,N,1]
    w = (g_last - G).exp()                                  # decay from token j to the chunk end
    local = (K * w[..., None]).transpose(-1, -2) @ V        # [B,H,N,Dk,Dv]
    states = [K.new_zeros(B, Hh, Dk, V.shape[-1])]
    for n in range(N - 1):
        states.append(g_last[:, :, n, :, None].exp() * states[-1] + local[:, :, n])
    return torch.stack(states, dim=2)


class _Covariance:
    """Everything needed to apply A_t = H_t + lambda_t I to C vectors per chunk (docs/gka_spec.md section 3)."""

    def __init__(self, K, G, Hp, ridge_ratio):
        self.K, self.Hp = K, Hp
        self.eG = G.exp()[..., None]                         # exp(G_t), [B,H,N,C,1]
        self.M = _decay_mask(G)                              # [B,H,N,C,C]
        # ||H_t||_F^2 = e^{2G_t}||H_p||^2 + 2 e^{G_t} sum_j M_tj k_j^T H_p k_j + sum_ij M_ti M_tj (k_i.k_j)^2
        kk = K @ K.transpose(-1, -2)
        kHk = ((K @ Hp) * K).sum(-1)                         # k_j^T H_p k_j, [B,H,N,C]
        eG = self.eG[..., 0]
        fro2 = (eG ** 2 * Hp.square().sum((-1, -2))[..., None]
                + 2 * eG * (self.M @ kHk[..., None])[..., 0]
                + ((self.M @ kk.square()) * self.M).sum(-1))
        # the floor keeps sqrt differentiable at H_t = 0; it only matters where the ridge floor applies anyway
        self.fro = fro2.clamp_min(1e-24).sqrt()
        self.lam = (ridge_ratio * self.fro).clamp_min(RIDGE_FLOOR)

    def apply(self, X):
        """A_t x_t for all tokens: e^{G_t} H_p x_t + sum_{j<=t} M_tj k_j (k_j . x_t) + lambda_t x_t."""
        K = self.K
        return (self.eG * (X @ self.Hp)
                + (self.M * (X @ K.transpose(-1, -2))) @ K
                + self.lam[..., None] * X)

    def detached(self):
        new = object.__new__(_Covariance)
        for name in ("K", "Hp", "eG", "M", "fro", "lam"):
            setattr(new, name, getattr(self, name).detach())
        return new


def chebyshev_solve(cov, b, num_iter):
    """Solve A x = b token-wise with the Chebyshev iteration of docs/gka_spec.md section 2.

    Spectrum bounds per token: mu = lambda_t, L = ||H_t||_F + lambda_t (condition number <= 1 + 1/a).
    """
    mu = cov.lam[..., None]
    L = cov.fro[..., None] + mu
    eta = 2.0 / (L + mu)
    rho2_4 = ((L - mu) / (L + mu)) ** 2 / 4
    x_prev = torch.zeros_like(b)
    x = eta * b
    omega = torch.full_like(mu, 2.0)
    for _ in range(num_iter):
        omega = 1.0 / (1.0 - rho2_4 * omega)
        x, x_prev = x - omega * eta * (cov.apply(x) - b) + (omega - 1.0) * (x - x_prev), x
    return x


class _SolveInBackward(torch.autograd.Function):
    """Forward: zeros. Backward: A^-1 grad (the second solve of docs/gka_spec.md section 4; A is symmetric)."""

    @staticmethod
    def forward(ctx, residual, cov, num_iter):
        ctx.cov, ctx.num_iter = cov, num_iter
        return torch.zeros_like(residual)

    @staticmethod
    def backward(ctx, grad):
        return chebyshev_solve(ctx.cov, grad, ctx.num_iter + BACKWARD_EXTRA_ITERS), None, None


def _finite_tokens(t):
    """[B, T, H(, D)] -> [B, T, H] bool: every entry of the token (and head) is finite."""
    ok = torch.isfinite(t)
    return ok.all(-1) if t.dim() == 4 else ok


def _sanitize(q, k, v, alpha, g, gk):
    """Non-finite entries -> 0, and the tokens whose output the reference makes non-finite.

    A chunk's matmuls multiply the future tokens of the chunk by exact zeros, and NaN * 0 = NaN, so a NaN
    at token t would reach the outputs of the chunk's earlier tokens. The scan therefore runs on finite
    inputs and sets NaN where the token-by-token recurrence has it: at t for a bad q_t or alpha_t (read
    only by token t), at every s >= t for a bad k_t or gate (they enter the covariance and so every solve), and
    for a bad entry i of v_t, in entry i of every o_s, s >= t (v_t enters row i of the value state only).
    Returns the sanitised inputs and poison [B, T, H, D] bool.
    """
    local = ~(_finite_tokens(q) & _finite_tokens(alpha))
    state = ~(_finite_tokens(k) & _finite_tokens(g))
    if gk is not None:
        state = state | ~_finite_tokens(gk)
    seen = lambda bad: bad.int().cumsum(1) > 0  # noqa: E731  (bad at this token or an earlier one)
    poison = (local | seen(state))[..., None] | seen(~torch.isfinite(v))
    clean = lambda t: None if t is None else torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)  # noqa: E731
    return (clean(q), clean(k), clean(v), clean(alpha), clean(g), clean(gk)), poison


def _scan(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, chunk_size, x=None):
    """One causal scan: (o [B, T, H, D] in the compute dtype, X [B, H, N, C, D] the solved x).

    x None: X is solved here (no grad); the read-out is differentiable (autograd gives the implicit
    backward of the module docstring). x given ([B, T, H, D]): the solve is skipped and X = x, the same
    differentiable graph for the backward of the custom op (one application of A instead of a solve).
    """
    B, T, Hh, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    C = min(chunk_size, T)
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32  # compute dtype
    (q, k, v, alpha, g, gk), poison = _sanitize(q, k, v, alpha, g, gk)
    Q, K, V = (_chunk(t.to(cdt), C) for t in (q, k, v))
    a = _chunk(alpha.to(cdt), C)[..., None]
    Gv = _chunk(g.to(cdt), C).cumsum(-1)
    Gk = Gv if gk is None else _chunk(gk.to(cdt), C).cumsum(-1)

    cov = _Covariance(K, Gk, _chunk_states(K, K, Gk), ridge_ratio)
    if x is None:
        with torch.no_grad():
            X = chebyshev_solve(cov.detached(), Q.detach(), num_iter)
    else:
        X = _chunk(x.to(cdt), C)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (Q, K, Gk)):
        X = X + _SolveInBackward.apply(Q - cov.apply(X), cov.detached(), num_iter)

    Qp = Q + a * (X - Q)                                   # q'_t = q_t + alpha_t (x_t - q_t)
    # gated linear attention read-out o_t = scale * S_t q'_t, with S in (k, v) layout here
    Sp = _chunk_states(K, V, Gv)
    Mv = cov.M if gk is None else _decay_mask(Gv)
    O = Gv.exp()[..., None] * (Qp @ Sp) + (Mv * (Qp @ K.transpose(-1, -2))) @ V
    o = _unchunk(scale * O, T)
    # a factor (NaN or 1) rather than a NaN constant: gradients through a NaN output are NaN as well
    return o * torch.where(poison, float("nan"), 1.0).to(o.dtype), X


def _flip(*ts):
    return tuple(None if t is None else t.flip(1) for t in ts)


def gka_scan_chunked(q, k, v, alpha, g, gk=None, ridge_ratio=0.02, num_iter=30, scale=None,
                     reverse=False, chunk_size=64):
    """Chunked GKA forward (autograd gives the implicit backward). Same contract as gka_scan."""
    if reverse:
        o = gka_scan_chunked(*_flip(q, k, v, alpha, g, gk), ridge_ratio, num_iter, scale, False, chunk_size)
        return o.flip(1)
    if q.shape[1] == 0:
        return q.new_zeros(q.shape)
    return _scan(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, chunk_size)[0].to(q.dtype)


def gka_chunked_forward(q, k, v, alpha, g, gk=None, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False,
                        chunk_size=64):
    """Forward of the custom op (no autograd): (o [B, T, H, D] in q's dtype, x [B, T, H, D] in the compute
    dtype, the solution of the ridge systems that gka_chunked_backward takes instead of solving again)."""
    if reverse:
        o, x = gka_chunked_forward(*_flip(q, k, v, alpha, g, gk), ridge_ratio, num_iter, scale, False, chunk_size)
        return o.flip(1), x.flip(1)
    with torch.no_grad():
        o, X = _scan(q, k, v, alpha, g, gk, ridge_ratio, num_iter, scale, chunk_size)
    return o.to(q.dtype), _unchunk(X, q.shape[1])


def gka_chunked_backward(do, q, k, v, alpha, g, gk, x, ridge_ratio=0.02, num_iter=30, scale=None, reverse=False,
                         chunk_size=64):
    """Gradients (dq, dk, dv, dalpha, dg, dgk or None; in the compute dtype) of gka_chunked_forward's o for the
    output gradient do.

    Rebuilds the differentiable part of the scan around the saved x (chunk states, ||H_t||_F, one
    application of A, the read-out) and differentiates it: the forward solve is not repeated, the backward
    solve of the module docstring runs once.
    """
    if reverse:
        grads = gka_chunked_backward(*_flip(do, q, k, v, alpha, g, gk, x), ridge_ratio, num_iter, scale, False,
                                     chunk_size)
        return _flip(*grads)
    # leaves in the compute dtype: the gradients come back unrounded (the caller sums the directions' and casts)
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    leaves = [t.detach().to(cdt).requires_grad_() for t in (q, k, v, alpha, g)]
    if gk is not None:
        leaves.append(gk.detach().to(cdt).requires_grad_())
    with autograd_inside_op():
        o, _ = _scan(*leaves[:5], leaves[5] if gk is not None else None, ridge_ratio, num_iter, scale,
                     chunk_size, x=x)
        grads = torch.autograd.grad(o, leaves, do.to(o.dtype), allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]
    return tuple(grads) + ((None,) if gk is None else ())
