"""Token-by-token GKA in float64 with an exact solve: the spec in code (docs/gka_spec.md section 1).

Slow (a Python loop over T, a D x D solve per token) and memory-hungry under autograd; it exists to
define what every other backend must compute, and to be differentiated by autograd in the tests.
"""
import torch

# Floor of the adaptive ridge: lambda_t = max(a * ||H_t||_F, RIDGE_FLOOR). Without it, H_t = 0
# (all keys so far zero) gives a singular system (docs/gka_spec.md section 2, last paragraph).
RIDGE_FLOOR = 1e-6


def gka_scan_reference(q, k, v, alpha, g, gk=None, ridge_ratio=0.02, scale=None, reverse=False):
    """Causal GKA over [B, T, H, D] inputs; returns [B, T, H, D] in q's dtype.

    H_t = exp(gk_t) H_{t-1} + k_t k_t^T,  S_t = exp(g_t) S_{t-1} + v_t k_t^T
    x_t = (H_t + lambda_t I)^-1 q_t with lambda_t = a ||H_t||_F,  q'_t = q_t + alpha_t (x_t - q_t)
    o_t = scale * S_t q'_t
    """
    if reverse:
        flip = lambda t: None if t is None else t.flip(1)  # noqa: E731
        o = gka_scan_reference(flip(q), flip(k), flip(v), flip(alpha), flip(g), flip(gk),
                               ridge_ratio=ridge_ratio, scale=scale, reverse=False)
        return o.flip(1)
    B, T, Hh, D = q.shape
    dtype_out = q.dtype
    scale = D ** -0.5 if scale is None else scale
    q, k, v, alpha, g = (t.double() for t in (q, k, v, alpha, g))
    gk = g if gk is None else gk.double()
    eye = torch.eye(D, dtype=torch.float64, device=q.device)
    Hs = q.new_zeros(B, Hh, D, D)  # key covariance
    Ss = q.new_zeros(B, Hh, D, D)  # value-key state, S[i, j] = sum v_i k_j
    outs = []
    for t in range(T):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]  # [B, H, D]
        Hs = gk[:, t, :, None, None].exp() * Hs + kt[..., :, None] * kt[..., None, :]
        Ss = g[:, t, :, None, None].exp() * Ss + vt[..., :, None] * kt[..., None, :]
        fro = Hs.flatten(-2).norm(dim=-1)  # ||H_t||_F, [B, H]
        lam = (ridge_ratio * fro).clamp_min(RIDGE_FLOOR)
        x = torch.linalg.solve(Hs + lam[..., None, None] * eye, qt.unsqueeze(-1)).squeeze(-1)
        qp = qt + alpha[:, t, :, None] * (x - qt)
        outs.append(scale * (Ss @ qp.unsqueeze(-1)).squeeze(-1))
    return torch.stack(outs, dim=1).to(dtype_out)
