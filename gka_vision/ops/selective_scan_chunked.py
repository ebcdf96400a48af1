"""The selective scan in PyTorch with bounded memory: forward and an explicit backward, no autograd graph.

The sequence is cut into chunks of `chunk_len(...)` tokens, sized so that one [batch, channels, chunk, d_state]
tensor holds at most CHUNK_ELEMENTS numbers; inside a chunk the recurrence

    x_t = a_t x_{t-1} + b_t,    a_t = exp(delta_t A),  b_t = delta_t u_t B_t

runs as a log-depth (Hillis-Steele) prefix scan, and the last state carries into the next chunk. Memory is
a few chunk-sized tensors whatever the length; the autograd graph of a log-depth scan over the whole
sequence (what autograd would keep) grew with batch x channels x length x d_state x log2(length).

Backward, for the output gradient gy of y_t = sum_n C_t[n] x_t[n] (the adjoint recurrence, run backwards):

    h_t = C_t gy_t + a_{t+1} h_{t+1}                       dL/dx_t
    dL/db_t = h_t,  dL/d(delta_t A) = h_t x_{t-1} a_t

from which du, ddelta, dA, dB, dC follow by the chain rule. A first pass recomputes the states at the chunk
starts; the second visits the chunks from the last, recomputing each chunk's states from its start state.

Layout: u, delta [b, G, c, L] (G groups of c channels; G = 1 for B, C of shape [b, N, L]), A [G, c, N],
B, C [b, G, 1, L, N]. State and arithmetic in fp32 (fp64 for fp64 inputs).
"""
import torch
import torch.nn.functional as F

# at most this many numbers in one [b, channels, chunk, d_state] tensor (16 MiB in fp32)
CHUNK_ELEMENTS = 1 << 22


def chunk_len(batch: int, channels: int, d_state: int, length: int, budget: int = 0) -> int:
    return max(1, min(length, (budget or CHUNK_ELEMENTS) // max(1, batch * channels * d_state)))


def _prefix(a, b, carry):
    """States x_t = a_t x_{t-1} + b_t along dim -2 with x_{-1} = carry [..., N]; also prod_{s<=t} a_s."""
    x, p = b, a
    k, n = 1, a.shape[-2]
    while k < n:
        x = x + p * F.pad(x[..., :-k, :], (0, 0, k, 0))
        p = p * F.pad(p[..., :-k, :], (0, 0, k, 0), value=1.0)
        k *= 2
    return x + p * carry.unsqueeze(-2)


def _layout(u, delta, A, B, C, delta_bias, delta_softplus, dtype):
    """Group-major views in the compute dtype, delta with bias and softplus applied."""
    b, d, L = u.shape
    G = 1 if B.dim() == 3 else B.shape[1]
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    dt = F.softplus(delta) if delta_softplus else delta
    grp = lambda t: t.to(dtype).reshape(b, G, d // G, L)  # noqa: E731
    per_t = lambda m: (m.unsqueeze(1) if m.dim() == 3 else m).to(dtype).transpose(-1, -2).unsqueeze(2)  # noqa: E731
    return grp(u), grp(dt), delta, A.to(dtype).reshape(G, d // G, -1), per_t(B), per_t(C)


def _chunk_terms(u, dt, A, B, s, e):
    """a_t, b_t of tokens [s, e): [b, G, c, e - s, N]."""
    dt_c = dt[..., s:e, None]
    return torch.exp(dt_c * A[:, :, None]), dt_c * u[..., s:e, None] * B[..., s:e, :]


def scan_forward(u, delta, A, B, C, delta_bias=None, delta_softplus=False, reverse=False, budget=0):
    """y [b, d, L] (compute dtype) of the scan alone (no D skip, no gate); see the module docstring."""
    if reverse:
        return scan_forward(u.flip(-1), delta.flip(-1), A, B.flip(-1), C.flip(-1), delta_bias, delta_softplus,
                            False, budget).flip(-1)
    dtype = torch.promote_types(u.dtype, torch.float32)
    b, d, L = u.shape
    u, dt, _, A, B, C = _layout(u, delta, A, B, C, delta_bias, delta_softplus, dtype)
    step = chunk_len(b, d, A.shape[-1], L, budget)
    x = u.new_zeros(*u.shape[:3], A.shape[-1])
    ys = []
    for s in range(0, L, step):
        e = min(s + step, L)
        states = _prefix(*_chunk_terms(u, dt, A, B, s, e), x)
        ys.append((states * C[..., s:e, :]).sum(-1))
        x = states[..., -1, :]
    y = torch.cat(ys, -1) if ys else u.new_zeros(u.shape)
    return y.reshape(b, d, L)


def scan_backward(gy, u, delta, A, B, C, delta_bias=None, delta_softplus=False, reverse=False, budget=0):
    """Gradients of scan_forward's y for its gradient gy: (du, ddelta, dA, dB, dC, ddelta_bias or None, y),
    in the compute dtype (y: the forward output, recomputed on the way, for the caller's z gate)."""
    if reverse:
        f = lambda t: t.flip(-1)  # noqa: E731
        du, ddelta, dA, dB, dC, dbias, y = scan_backward(f(gy), f(u), f(delta), A, f(B), f(C), delta_bias,
                                                         delta_softplus, False, budget)
        return f(du), f(ddelta), dA, f(dB), f(dC), dbias, f(y)
    dtype = torch.promote_types(u.dtype, torch.float32)
    b, d, L = u.shape
    Bshape, Cshape = B.shape, C.shape
    u, dt, delta_pre, A, B, C = _layout(u, delta, A, B, C, delta_bias, delta_softplus, dtype)
    gy = gy.to(dtype).reshape(u.shape)
    N = A.shape[-1]
    step = chunk_len(b, d, N, L, budget)
    starts = list(range(0, L, step))
    # pass 1: the state before each chunk
    carries = [u.new_zeros(*u.shape[:3], N)]
    for s in starts[:-1]:
        carries.append(_prefix(*_chunk_terms(u, dt, A, B, s, s + step), carries[-1])[..., -1, :])
    # pass 2: chunks from the last; hc = a_{e} h_{e}, the adjoint flowing in from the next chunk
    du, ddt, y = torch.empty_like(u), torch.empty_like(u), torch.empty_like(u)
    dB = u.new_empty(b, B.shape[1], L, N)
    dC = u.new_empty(b, B.shape[1], L, N)
    dA = torch.zeros_like(A)
    hc = torch.zeros_like(carries[0])
    for s, x0 in zip(reversed(starts), reversed(carries)):
        e = min(s + step, L)
        a, drive = _chunk_terms(u, dt, A, B, s, e)
        states = _prefix(a, drive, x0)
        y[..., s:e] = (states * C[..., s:e, :]).sum(-1)
        src = C[..., s:e, :] * gy[..., s:e, None]                       # C_t gy_t
        # h_t = src_t + a_{t+1} h_{t+1}: a forward scan over the flipped chunk, multipliers shifted by one
        a_next = F.pad(a[..., 1:, :], (0, 0, 0, 1), value=1.0)         # a_{t+1}; 1 at the chunk end (hc has it)
        h = _prefix(a_next.flip(-2), src.flip(-2), hc).flip(-2)
        hc = a[..., 0, :] * h[..., 0, :]
        x_prev = torch.cat([x0.unsqueeze(-2), states[..., :-1, :]], -2)
        gdec = h * x_prev * a                                           # dL/d(delta_t A)
        hB = (h * B[..., s:e, :]).sum(-1)
        du[..., s:e] = dt[..., s:e] * hB
        ddt[..., s:e] = u[..., s:e] * hB + (gdec * A[:, :, None]).sum(-1)
        dB[..., s:e, :] = (h * (dt[..., s:e] * u[..., s:e]).unsqueeze(-1)).sum(2)
        dC[..., s:e, :] = (states * gy[..., s:e, None]).sum(2)
        dA += (gdec * dt[..., s:e, None]).sum((0, 3))
    ddelta = ddt.reshape(b, d, L)
    if delta_softplus:
        ddelta = ddelta * torch.sigmoid(delta_pre)
    dbias = None if delta_bias is None else ddelta.sum((0, 2))
    to_bc = lambda m, shape: m.transpose(-1, -2).reshape(shape)  # noqa: E731  ([b, G, N, L] or [b, N, L])
    return (du.reshape(b, d, L), ddelta, dA.reshape(d, N), to_bc(dB, Bshape), to_bc(dC, Cshape), dbias,
            y.reshape(b, d, L))
