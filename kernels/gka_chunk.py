"""Chunked GKA in Triton: forward (GKA.md sections 1-3) and implicit backward (section 4).

Four kernels, each launched once for one or both scan directions (the direction is a grid axis; the
reverse scan reads the tokens from the end with reverse indexing, no flipped copies):

    _fwd_states_kernel   grid (B*H, NDIR)      chunk-start states H_p = sum k k^T, S_p = sum k v^T (sec. 3)
    _fwd_solve_kernel    grid (NC, B*H, NDIR)  ||H_t||_F, lambda_t, 30 Chebyshev steps (sec. 2), GLA read-out
    _bwd_solve_kernel    grid (NC, B*H, NDIR)  GLA gradients, second solve qbar = A^-1 xbar, intra-chunk
                                               covariance/ridge gradients, per-chunk reverse-state increments
    _bwd_states_kernel   grid (B*H, NDIR)      reverse-time accumulation R_t (sec. 4) and the GLA dh state,
                                               inter-chunk gradients, reverse cumsum of the gate gradient

All state and solver arithmetic is fp32; q/k/v/alpha may be fp32, bf16 or fp16. Head dims are padded
to BD (a power of two >= 16) with masks; T is a runtime argument (never specialised) and tails are masked.

Notation inside a chunk of BC tokens (scan order): G_t = within-chunk cumsum of the log gate,
M_tj = exp(G_t - G_j) [j <= t], eG_t = exp(G_t). Gradients w.r.t. the global cumulative gate G^glob
use dL/dG^glob_m = (terms where m is the read position t) - (terms where m is the written position j);
the gate gradient is then the reverse (scan-order) cumsum of that.
"""
import triton
import triton.language as tl

# Must equal gka_vision.ops.gka_reference.RIDGE_FLOOR (a test checks it): lambda_t = max(a ||H_t||_F, floor).
RIDGE_FLOOR = 1e-6
# ||H_t||_F = sqrt(max(||H_t||_F^2, FRO2_FLOOR)), as in the torch backend.
FRO2_FLOOR = 1e-24


@triton.jit
def _token_offsets(c, T, H, i_b, i_h, rev, BC: tl.constexpr):
    """Scan-order positions of chunk c -> (valid mask, flat token index (b*T + t)*H + h, int64)."""
    pos = c * BC + tl.arange(0, BC)
    valid = pos < T
    t_idx = tl.where(rev, T - 1 - pos, pos)
    t_idx = tl.where(valid, t_idx, 0)
    tok = (i_b * T + t_idx) * H + i_h
    return valid, tok.to(tl.int64)


@triton.jit
def _load_rows(ptr, tok, valid, D: tl.constexpr, BD: tl.constexpr):
    """[BC, BD] fp32 tile of a [B, T, H, D] tensor (zeros outside the tail and the head dim)."""
    offs_d = tl.arange(0, BD)
    m = valid[:, None] & (offs_d[None, :] < D)
    return tl.load(ptr + tok[:, None] * D + offs_d[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _rows_ptr_mask(ptr, tok, valid, D: tl.constexpr, BD: tl.constexpr):
    offs_d = tl.arange(0, BD)
    return ptr + tok[:, None] * D + offs_d[None, :], valid[:, None] & (offs_d[None, :] < D)


@triton.jit
def _state_ptr(ptr, slot, BD: tl.constexpr):
    """Pointers of one padded BD x BD fp32 state; slot = (dir * B*H + bh) * NC + chunk (int64)."""
    offs = tl.arange(0, BD)
    return ptr + slot * BD * BD + offs[:, None] * BD + offs[None, :]


@triton.jit
def _apply_A(X, K, Hp, M, eG, lam, PREC: tl.constexpr):
    """A_t x_t for every row t (GKA.md sec. 3): e^{G_t} H_p x_t + sum_{j<=t} M_tj k_j (k_j . x_t) + lambda_t x_t."""
    XK = tl.dot(X, tl.trans(K), input_precision=PREC) * M
    return (eG[:, None] * tl.dot(X, Hp, input_precision=PREC)
            + tl.dot(XK, K, input_precision=PREC) + lam[:, None] * X)


@triton.jit
def _chebyshev(B_rhs, K, Hp, M, eG, lam, fro, num_iter, PREC: tl.constexpr):
    """Solve A_t x_t = b_t row-wise with the Chebyshev iteration of GKA.md sec. 2 (spectrum [lam, fro + lam])."""
    L = fro + lam
    eta = 2.0 / (L + lam)
    rho = (L - lam) / (L + lam)
    rho2_4 = rho * rho * 0.25
    x_prev = tl.zeros_like(B_rhs)
    x = eta[:, None] * B_rhs
    omega = tl.full(lam.shape, 2.0, tl.float32)
    for _ in range(num_iter):
        omega = 1.0 / (1.0 - rho2_4 * omega)
        ax = _apply_A(x, K, Hp, M, eG, lam, PREC)
        x_new = x - (omega * eta)[:, None] * (ax - B_rhs) + (omega - 1.0)[:, None] * (x - x_prev)
        x_prev = x
        x = x_new
    return x


@triton.jit
def _solve(B_rhs, K, Hp, M, eG, lam, fro, n_first, n_refine, PREC: tl.constexpr, PREC_HI: tl.constexpr):
    """x = A^-1 b: Chebyshev with PREC dots, then one refinement step (GKA.md sec. 2).

    With tf32 dots, A is applied with ~2e-4 relative error, which the condition number (up to 51) turns
    into ~1e-2 error in x. Refinement: r = b - A x with PREC_HI (tf32x3, fp32-accurate) dots, then
    x += Chebyshev(r) in PREC; the error becomes the product of the two solves' errors.
    """
    x = _chebyshev(B_rhs, K, Hp, M, eG, lam, fro, n_first, PREC)
    if n_refine > 0:
        r = B_rhs - _apply_A(x, K, Hp, M, eG, lam, PREC_HI)
        x += _chebyshev(r, K, Hp, M, eG, lam, fro, n_refine, PREC)
    return x


@triton.jit
def _chunk_gates(gate_ptr, gate_off, tok, valid, BC: tl.constexpr):
    """Within-chunk cumsum G, exp(G) and the decay mask M of one chunk (zeros of g in the tail)."""
    gg = tl.load(gate_ptr + gate_off + tok, mask=valid, other=0.0).to(tl.float32)
    G = tl.cumsum(gg, 0)
    offs = tl.arange(0, BC)
    causal = offs[:, None] >= offs[None, :]
    M = tl.where(causal, tl.exp(G[:, None] - G[None, :]), 0.0)
    return gg, G, M


@triton.jit(do_not_specialize=["T"])
def _fwd_states_kernel(k_ptr, v_ptr, gate_ptr, hk_ptr, hv_ptr,
                       T, H, NBH, BTH, NC, dir_base,
                       D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, PREC: tl.constexpr):
    """H_p and S_p at the start of every chunk (GKA.md sec. 3 chunk-level scan)."""
    i_bh = tl.program_id(0)
    i_s = tl.program_id(1)
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    Hk = tl.zeros([BD, BD], dtype=tl.float32)
    Sv = tl.zeros([BD, BD], dtype=tl.float32)
    slot0 = (i_s.to(tl.int64) * NBH + i_bh) * NC
    for c in range(0, NC):
        tl.store(_state_ptr(hk_ptr, slot0 + c, BD), Hk)
        tl.store(_state_ptr(hv_ptr, slot0 + c, BD), Sv)
        valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
        K = _load_rows(k_ptr, tok, valid, D, BD)
        V = _load_rows(v_ptr, tok, valid, D, BD)
        gg = tl.load(gate_ptr + gate_off + tok, mask=valid, other=0.0).to(tl.float32)
        G = tl.cumsum(gg, 0)
        g_last = tl.sum(gg, 0)
        Kw = K * tl.exp(g_last - G)[:, None]
        decay = tl.exp(g_last)
        Hk = decay * Hk + tl.dot(tl.trans(Kw), K, input_precision=PREC)
        Sv = decay * Sv + tl.dot(tl.trans(Kw), V, input_precision=PREC)


@triton.jit(do_not_specialize=["T"])
def _fwd_solve_kernel(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr,
                      o_ptr, x_ptr, fro_ptr,
                      T, H, NBH, BTH, NC, dir_base, n_first, n_refine,
                      ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                      D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, PREC: tl.constexpr,
                      PREC_HI: tl.constexpr, ACCUMULATE: tl.constexpr):
    """Per chunk: ||H_t||_F, lambda_t, x_t = A_t^-1 q_t, q'_t, o_t = scale S_t q'_t (GKA.md secs. 1-3).

    Only the Chebyshev steps use PREC dots; the rest uses PREC_HI: q' can be ~1/a = 50 times larger
    than q, so the read-out S_t q'_t cancels and needs fp32-accurate products.
    """
    c = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_s = tl.program_id(2)
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
    Q = _load_rows(q_ptr, tok, valid, D, BD)
    K = _load_rows(k_ptr, tok, valid, D, BD)
    gg, G, M = _chunk_gates(gate_ptr, gate_off, tok, valid, BC)
    eG = tl.exp(G)
    slot = (i_s.to(tl.int64) * NBH + i_bh) * NC + c
    Hp = tl.load(_state_ptr(hk_ptr, slot, BD))

    # ||H_t||_F^2 = e^{2G_t}||H_p||^2 + 2 e^{G_t} sum_j M_tj k_j^T H_p k_j + sum_ij M_ti M_tj (k_i.k_j)^2
    kHk = tl.sum(tl.dot(K, Hp, input_precision=PREC_HI) * K, 1)
    KK = tl.dot(K, tl.trans(K), input_precision=PREC_HI)
    fro2 = (eG * eG * tl.sum(tl.sum(Hp * Hp, 1), 0)
            + 2.0 * eG * tl.sum(M * kHk[None, :], 1)
            + tl.sum(tl.dot(M, KK * KK, input_precision=PREC_HI) * M, 1))
    fro = tl.sqrt(tl.maximum(fro2, fro2_floor))
    lam = tl.maximum(ridge_ratio * fro, ridge_floor)

    X = _solve(Q, K, Hp, M, eG, lam, fro, n_first, n_refine, PREC, PREC_HI)
    alpha = tl.load(a_ptr + tok, mask=valid, other=0.0).to(tl.float32)
    Qp = Q + alpha[:, None] * (X - Q)                  # q'_t = q_t + alpha_t (x_t - q_t)

    V = _load_rows(v_ptr, tok, valid, D, BD)
    Sp = tl.load(_state_ptr(hv_ptr, slot, BD))
    QK = tl.dot(Qp, tl.trans(K), input_precision=PREC_HI) * M
    O = scale * (eG[:, None] * tl.dot(Qp, Sp, input_precision=PREC_HI)
                 + tl.dot(QK, V, input_precision=PREC_HI))

    o_ptrs, m = _rows_ptr_mask(o_ptr, tok, valid, D, BD)
    if ACCUMULATE:
        tl.atomic_add(o_ptrs, out_scale * O, mask=m)
    else:
        tl.store(o_ptrs, out_scale * O, mask=m)
    dir_tok = gate_off + tok
    x_ptrs, _ = _rows_ptr_mask(x_ptr, dir_tok, valid, D, BD)
    tl.store(x_ptrs, X, mask=m)
    tl.store(fro_ptr + dir_tok, fro, mask=valid)


@triton.jit(do_not_specialize=["T"])
def _bwd_solve_kernel(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                      dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr,
                      T, H, NBH, BTH, NC, dir_base, n_first, n_refine,
                      ridge_ratio, ridge_floor, scale, out_scale,
                      D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, PREC: tl.constexpr,
                      PREC_HI: tl.constexpr):
    """Per chunk: everything of the backward that needs no later chunk (GKA.md sec. 4).

    dq' from the read-out, xbar = alpha dq', qbar = A^-1 xbar (second Chebyshev solve),
    Hbar_t = -(qbar x^T + x qbar^T)/2 + c_t H_t with c_t = -a (x . qbar) / ||H_t||_F (the ridge term),
    intra-chunk dk/dv and gate terms, and the chunk's increments of the reverse states:
    U_c = sum_t e^{G_t} Hbar_t (covariance, R of sec. 4) and W_c = scale sum_t e^{G_t} q'_t do_t^T (GLA).
    Three phases (read-out gradients, solve, covariance gradients) so that only the solve's operands
    are live during the iterations; results are added to dq/dk/dv as soon as they are known.
    """
    c = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_s = tl.program_id(2)
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
    dir_tok = gate_off + tok
    slot = (i_s.to(tl.int64) * NBH + i_bh) * NC + c
    gg, G, M = _chunk_gates(gate_ptr, gate_off, tok, valid, BC)
    eG = tl.exp(G)
    K = _load_rows(k_ptr, tok, valid, D, BD)
    alpha = tl.load(a_ptr + tok, mask=valid, other=0.0).to(tl.float32)
    dq_ptrs, m = _rows_ptr_mask(dq_ptr, tok, valid, D, BD)
    dk_ptrs, _ = _rows_ptr_mask(dk_ptr, tok, valid, D, BD)

    # 1. read-out o_t = scale (e^{G_t} S_p^T q'_t + sum_j M_tj (q'_t . k_j) v_j)
    Q = _load_rows(q_ptr, tok, valid, D, BD)
    X = _load_rows(x_ptr, dir_tok, valid, D, BD)
    V = _load_rows(v_ptr, tok, valid, D, BD)
    dO = out_scale * _load_rows(do_ptr, tok, valid, D, BD)
    Sp = tl.load(_state_ptr(hv_ptr, slot, BD))
    Qp = Q + alpha[:, None] * (X - Q)
    dOV = tl.dot(dO, tl.trans(V), input_precision=PREC_HI) * M
    dQp = scale * (tl.dot(dOV, K, input_precision=PREC_HI)
                   + eG[:, None] * tl.dot(dO, tl.trans(Sp), input_precision=PREC_HI))
    QK = tl.dot(Qp, tl.trans(K), input_precision=PREC_HI) * M
    dV_ptrs, _ = _rows_ptr_mask(dv_ptr, tok, valid, D, BD)
    tl.atomic_add(dV_ptrs, scale * tl.dot(tl.trans(QK), dO, input_precision=PREC_HI), mask=m)
    dKg = scale * tl.dot(tl.trans(dOV), Qp, input_precision=PREC_HI)
    tl.atomic_add(dk_ptrs, dKg, mask=m)
    tl.atomic_add(dq_ptrs, (1.0 - alpha)[:, None] * dQp, mask=m)
    tl.atomic_add(da_ptr + tok, tl.sum(dQp * (X - Q), 1), mask=valid)
    # gate: read term q'.dq' minus write term k.dk (GLA part)
    dG = tl.sum(Qp * dQp, 1) - tl.sum(K * dKg, 1)
    Wg = scale * tl.dot(tl.trans(Qp * eG[:, None]), dO, input_precision=PREC_HI)
    tl.store(_state_ptr(w_ptr, slot, BD), Wg)
    rhs = alpha[:, None] * dQp

    # 2. second solve (sec. 4): qbar = A^-1 xbar, xbar = alpha dq'
    Hp = tl.load(_state_ptr(hk_ptr, slot, BD))
    fro = tl.load(fro_ptr + dir_tok, mask=valid, other=1.0)
    lam = tl.maximum(ridge_ratio * fro, ridge_floor)
    Qb = _solve(rhs, K, Hp, M, eG, lam, fro, n_first, n_refine, PREC, PREC_HI)
    tl.atomic_add(dq_ptrs, Qb, mask=m)

    # 3. covariance and ridge gradients; c_t is zero where the ridge floor is active
    X = _load_rows(x_ptr, dir_tok, valid, D, BD)
    ridge_active = valid & (ridge_ratio * fro > ridge_floor)
    cr = tl.where(ridge_active, -ridge_ratio * tl.sum(X * Qb, 1) / fro, 0.0)
    XK = tl.dot(X, tl.trans(K), input_precision=PREC_HI) * M
    QbK = tl.dot(Qb, tl.trans(K), input_precision=PREC_HI) * M
    HX = eG[:, None] * tl.dot(X, Hp, input_precision=PREC_HI) + tl.dot(XK, K, input_precision=PREC_HI)
    # e_j = sum_t M_tj c_t e^{G_t};  Wc_ij = sum_t M_ti c_t M_tj
    ce = cr * eG
    e = tl.sum(M * ce[:, None], 0)
    Wc = tl.dot(tl.trans(M), M * cr[:, None], input_precision=PREC_HI)
    KK = tl.dot(K, tl.trans(K), input_precision=PREC_HI)
    # (sum_{t>=j in chunk} M_tj Hbar_t) k_j
    RK = (-0.5 * (tl.dot(tl.trans(XK), Qb, input_precision=PREC_HI)
                  + tl.dot(tl.trans(QbK), X, input_precision=PREC_HI))
          + e[:, None] * tl.dot(K, Hp, input_precision=PREC_HI)
          + tl.dot(Wc * KK, K, input_precision=PREC_HI))
    tl.atomic_add(dk_ptrs, 2.0 * RK, mask=m)
    # gate: read term <Hbar_t, H_t> = -qbar.(H x) + c ||H||^2, minus write term k^T R k
    dG += -tl.sum(Qb * HX, 1) + cr * fro * fro - tl.sum(K * RK, 1)
    tl.store(dG_ptr + dir_tok, dG, mask=valid)

    sigma = tl.sum(ce * eG, 0)
    U = (-0.5 * (tl.dot(tl.trans(X * eG[:, None]), Qb, input_precision=PREC_HI)
                 + tl.dot(tl.trans(Qb * eG[:, None]), X, input_precision=PREC_HI))
         + sigma * Hp + tl.dot(tl.trans(K * e[:, None]), K, input_precision=PREC_HI))
    tl.store(_state_ptr(u_ptr, slot, BD), U)


@triton.jit(do_not_specialize=["T"])
def _bwd_states_kernel(k_ptr, v_ptr, gate_ptr, u_ptr, w_ptr, dk_ptr, dv_ptr, dG_ptr, dg_ptr,
                       T, H, NBH, BTH, NC, dir_base,
                       D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, PREC: tl.constexpr):
    """Reverse chunk scan: R (sum of later e^{..} Hbar_t, GKA.md sec. 4) and the GLA state gradient.

    Adds the inter-chunk parts of dk (2 R k and the GLA term) and dv, and turns dL/dG^glob into the
    gate gradient by a reverse cumsum in scan order.
    """
    i_bh = tl.program_id(0)
    i_s = tl.program_id(1)
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    R = tl.zeros([BD, BD], dtype=tl.float32)
    dS = tl.zeros([BD, BD], dtype=tl.float32)
    run = tl.zeros([1], dtype=tl.float32)
    slot0 = (i_s.to(tl.int64) * NBH + i_bh) * NC
    for ci in range(0, NC):
        c = NC - 1 - ci
        valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
        dir_tok = gate_off + tok
        K = _load_rows(k_ptr, tok, valid, D, BD)
        V = _load_rows(v_ptr, tok, valid, D, BD)
        gg = tl.load(gate_ptr + dir_tok, mask=valid, other=0.0).to(tl.float32)
        G = tl.cumsum(gg, 0)
        g_last = tl.sum(gg, 0)
        w = tl.where(valid, tl.exp(g_last - G), 0.0)
        RK = w[:, None] * tl.dot(K, R, input_precision=PREC)
        dKg = w[:, None] * tl.dot(V, tl.trans(dS), input_precision=PREC)
        dV = w[:, None] * tl.dot(K, dS, input_precision=PREC)
        m_ptrs, m = _rows_ptr_mask(dk_ptr, tok, valid, D, BD)
        tl.atomic_add(m_ptrs, dKg + 2.0 * RK, mask=m)
        m_ptrs, m = _rows_ptr_mask(dv_ptr, tok, valid, D, BD)
        tl.atomic_add(m_ptrs, dV, mask=m)
        dG = tl.load(dG_ptr + dir_tok, mask=valid, other=0.0)
        dG = tl.where(valid, dG - tl.sum(K * dKg, 1) - tl.sum(K * RK, 1), 0.0)
        # g_t enters G^glob_s for every s at or after t in scan order
        dg = tl.cumsum(dG, 0, reverse=True) + tl.sum(run, 0)
        run += tl.sum(dG, 0)
        tl.store(dg_ptr + dir_tok, dg, mask=valid)
        decay = tl.exp(g_last)
        R = decay * R + tl.load(_state_ptr(u_ptr, slot0 + c, BD))
        dS = decay * dS + tl.load(_state_ptr(w_ptr, slot0 + c, BD))
