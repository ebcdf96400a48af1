"""Chunked GKA in Triton: forward (docs/gka_spec.md sections 1-3) and implicit backward (section 4).

Four kernels, each launched once for one or both scan directions (the direction is a grid axis; the
reverse scan reads the tokens from the end with reverse indexing, no flipped copies):

    _fwd_states_kernel   grid (B*H, NDIR, BD/BN)  chunk-start states H_p = sum k k^T, S_p = sum k v^T (sec. 3),
                                                  BN state columns per program
    _fwd_solve_kernel    grid (NC, B*H, NDIR)     ||H_t||_F, lambda_t, the Chebyshev solve with refinement
                                                  rounds (sec. 2), GLA read-out
    _bwd_solve_kernel    grid (NC, B*H, NDIR)     GLA gradients, second solve qbar = A^-1 xbar, intra-chunk
                                                  covariance/ridge gradients, per-chunk reverse-state increments
    _bwd_states_kernel   grid (B*H, NDIR, BD/BN)  reverse-time accumulation R_t (sec. 4) and the GLA dS state,
                                                  inter-chunk gradients, the write terms of the gate gradient

Every output is per direction ([NDIR, ...], each element stored by one program, no atomics); two small kernels
finish: _gate_grad_kernel (the gate gradient's sum over later scan positions) and _sum_directions_kernel.

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
    return _tile_offsets(c * BC, T, H, i_b, i_h, rev, BC)


@triton.jit
def _tile_offsets(start, T, H, i_b, i_h, rev, BT: tl.constexpr):
    """_token_offsets of the BT scan-order positions start, start + 1, ..."""
    pos = start + tl.arange(0, BT)
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
def _state_block_ptr(ptr, slot, r0, c0, BD: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr):
    """Pointers of the [BR, BN] block at rows r0.., columns c0.. of one padded BD x BD fp32 state."""
    rows = r0 + tl.arange(0, BR)
    cols = c0 + tl.arange(0, BN)
    return ptr + slot * BD * BD + rows[:, None] * BD + cols[None, :]


@triton.jit
def _dot(a, b, PREC: tl.constexpr, A_EXACT: tl.constexpr = False, B_EXACT: tl.constexpr = False):
    """fp32-accumulated a @ b; PREC "bf16" rounds both operands to bf16 (twice the tensor-core rate of
    tf32), "bf16x3" is a split hi/lo bf16 product (~1e-5 relative error, half the cost of tf32x3),
    otherwise it is tl.dot's input_precision ("tf32", "tf32x3", "ieee").

    A_EXACT / B_EXACT: the operand holds bf16 values (loaded from a bf16 tensor), so its low part is zero and
    bf16x3 drops the products with it: the same sum (the dropped products add exact zeros), one or two products
    instead of three (docs/kernels.md, "Exact bf16 operands")."""
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PREC == "bf16x3":
        # a = a_hi + a_lo with a_hi = bf16(a), a_lo = bf16(a - a_hi) (~16 mantissa bits), fp32 accumulation:
        # a_hi b_lo + a_lo b_hi + a_hi b_hi (the small terms first), 3 bf16 products = 1.5 tf32 products
        a_hi = a.to(tl.bfloat16)
        b_hi = b.to(tl.bfloat16)
        if A_EXACT and B_EXACT:
            out = tl.dot(a_hi, b_hi)
        elif B_EXACT:
            out = tl.dot(a_hi, b_hi, tl.dot((a - a_hi.to(tl.float32)).to(tl.bfloat16), b_hi))
        elif A_EXACT:
            out = tl.dot(a_hi, b_hi, tl.dot(a_hi, (b - b_hi.to(tl.float32)).to(tl.bfloat16)))
        else:
            a_lo = (a - a_hi.to(tl.float32)).to(tl.bfloat16)
            b_lo = (b - b_hi.to(tl.float32)).to(tl.bfloat16)
            acc = tl.dot(a_hi, b_lo)
            acc = tl.dot(a_lo, b_hi, acc)
            out = tl.dot(a_hi, b_hi, acc)
        return out
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@triton.jit
def _dot_acc(a, b, acc, PREC: tl.constexpr):
    """acc + a @ b with _dot's precisions; the tensor core adds into acc (bf16x3: a separate sum)."""
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PREC == "bf16x3":
        return acc + _dot(a, b, PREC)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _apply_A(X, K, Hp, M, eG, lam, PREC: tl.constexpr, K_EXACT: tl.constexpr = False):
    """A_t x_t for every row t (docs/gka_spec.md sec. 3): e^{G_t} H_p x_t + sum_{j<=t} M_tj k_j (k_j . x_t) + lambda_t x_t."""
    XK = _dot(X, tl.trans(K), PREC, False, K_EXACT) * M
    return eG[:, None] * _dot(X, Hp, PREC) + _dot(XK, K, PREC, False, K_EXACT) + lam[:, None] * X


@triton.jit
def _chebyshev_step(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC: tl.constexpr):
    """x_{k+1} = x_k - omega eta (A x_k - b) + (omega - 1)(x_k - x_{k-1}), elementwise in x_k and x_{k-1}."""
    ax = _apply_A(x, K, Hp, M, eG, lam, PREC)
    return x - (omega * eta)[:, None] * (ax - B_rhs) + (omega - 1.0)[:, None] * (x - x_prev)


@triton.jit
def _chebyshev_step_folded(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC: tl.constexpr):
    """_chebyshev_step with its per-row scalars folded into the operands (docs/kernels.md, "Folded steps"):
    x_{k+1} = omega (1 - eta lam) x_k + (1 - omega) x_{k-1} + omega eta b - omega eta (A - lam I) x_k, where
    (A - lam I) x_k is applied to x_k scaled by -omega eta and its two products accumulate into one tile: six
    elementwise operations per element instead of the plain step's eight, the same value in exact arithmetic."""
    c1 = omega * eta
    xs = x * (-c1)[:, None]
    # the terms outside the products first, so that the last product accumulates into them and ends the step
    t = (omega * (1.0 - eta * lam))[:, None] * x + (1.0 - omega)[:, None] * x_prev + c1[:, None] * B_rhs
    acc = eG[:, None] * _dot(xs, Hp, PREC) + t
    xk = _dot(xs, tl.trans(K), PREC) * M
    return _dot_acc(xk, K, acc, PREC)


@triton.jit
def _chebyshev(B_rhs, K, Hp, M, eG, lam, fro, num_iter, PREC: tl.constexpr, PAIRED: tl.constexpr,
               FOLDED: tl.constexpr):
    """Solve A_t x_t = b_t row-wise with the Chebyshev iteration of docs/gka_spec.md sec. 2 (spectrum [lam, fro + lam]).

    PAIRED: two steps per loop iteration, the second with the roles of the two iterates swapped, so that each new
    iterate overwrites the one it no longer needs in place instead of rotating x_prev <- x <- x_new (a register
    copy of both tiles every step); the same arithmetic in the same order, more code (docs/kernels.md, "Paired
    steps"). FOLDED: each step is _chebyshev_step_folded (fewer elementwise operations, other roundings), paired or
    not."""
    L = fro + lam
    eta = 2.0 / (L + lam)
    rho = (L - lam) / (L + lam)
    rho2_4 = rho * rho * 0.25
    x_prev = tl.zeros_like(B_rhs)
    x = eta[:, None] * B_rhs
    omega = tl.full(lam.shape, 2.0, tl.float32)
    if FOLDED and PAIRED:
        for _ in range(num_iter // 2):
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x_prev = _chebyshev_step_folded(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x = _chebyshev_step_folded(x_prev, x, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)
        if num_iter % 2 == 1:
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x = _chebyshev_step_folded(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)
    elif FOLDED:
        for _ in range(num_iter):
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x_new = _chebyshev_step_folded(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)
            x_prev = x
            x = x_new
    elif PAIRED:
        for _ in range(num_iter // 2):
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x_prev = _chebyshev_step(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)  # x_prev <- x_{k+1}
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x = _chebyshev_step(x_prev, x, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)  # x <- x_{k+2}
        if num_iter % 2 == 1:
            omega = 1.0 / (1.0 - rho2_4 * omega)
            x = _chebyshev_step(x, x_prev, B_rhs, K, Hp, M, eG, lam, eta, omega, PREC)
    else:
        # the step written out rather than a call of _chebyshev_step: the inlined call changes the debug info, and
        # with it ptxas' register allocation of the backward solve kernel (sass_identity.sh in the docs' runs folder)
        for _ in range(num_iter):
            omega = 1.0 / (1.0 - rho2_4 * omega)
            ax = _apply_A(x, K, Hp, M, eG, lam, PREC)
            x_new = x - (omega * eta)[:, None] * (ax - B_rhs) + (omega - 1.0)[:, None] * (x - x_prev)
            x_prev = x
            x = x_new
    return x


@triton.jit
def _solve(B_rhs, K, Hp, M, eG, lam, fro, n_first, n_rounds, n_refine,
           PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, PAIRED: tl.constexpr,
           FOLDED: tl.constexpr, K_EXACT: tl.constexpr = False):
    """x = A^-1 b: n_first Chebyshev steps with PREC_FIRST products, then n_rounds refinement rounds
    (docs/gka_spec.md sec. 2 solver, classical iterative refinement around it).

    With tf32 (bf16) products A is applied with ~2e-4 (~4e-3) relative error, which the condition number
    (up to 51) turns into ~1e-2 (~0.2) error in x. A round: r = b - A x with PREC_HI (bf16x3, ~1e-5, or
    tf32x3, fp32-accurate) products, then x += Chebyshev(r) (n_refine steps, PREC products); each round
    multiplies the error by about the inner solve's relative error. K_EXACT: K holds bf16 values (_dot).
    """
    x = _chebyshev(B_rhs, K, Hp, M, eG, lam, fro, n_first, PREC_FIRST, PAIRED, FOLDED)
    for _ in range(n_rounds):
        r = B_rhs - _apply_A(x, K, Hp, M, eG, lam, PREC_HI, K_EXACT)
        x += _chebyshev(r, K, Hp, M, eG, lam, fro, n_refine, PREC, PAIRED, FOLDED)
    return x


@triton.jit
def _solve_lean(b_ptrs, b_scale, x_ptrs, m, K, Hp, M, eG, lam, fro, n_first, n_rounds, n_refine,
                PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, PAIRED: tl.constexpr,
                FOLDED: tl.constexpr, K_EXACT: tl.constexpr = False):
    """_solve with b = b_scale[:, None] * b_ptrs[...] read from memory and the running solution parked in memory
    at x_ptrs during each refinement round, so a round's Chebyshev steps keep three [BC, BD] tiles live
    (residual, correction, previous correction) instead of five: fewer registers per program. x_ptrs ends holding x.
    """
    x = _chebyshev(b_scale[:, None] * tl.load(b_ptrs, mask=m, other=0.0).to(tl.float32),
                   K, Hp, M, eG, lam, fro, n_first, PREC_FIRST, PAIRED, FOLDED)
    for _ in range(n_rounds):
        tl.store(x_ptrs, x, mask=m)
        r = b_scale[:, None] * tl.load(b_ptrs, mask=m, other=0.0).to(tl.float32) - _apply_A(x, K, Hp, M, eG, lam,
                                                                                             PREC_HI, K_EXACT)
        d = _chebyshev(r, K, Hp, M, eG, lam, fro, n_refine, PREC, PAIRED, FOLDED)
        tl.debug_barrier()  # the stores of x are visible to every thread of the program
        x = tl.load(x_ptrs, mask=m, other=0.0) + d
    tl.store(x_ptrs, x, mask=m)
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


@triton.jit
def _load_cols(ptr, tok, valid, c0, D: tl.constexpr, BN: tl.constexpr):
    """[BC, BN] fp32 tile of columns c0.. of a [.., D] row-major tensor (zeros outside tail and head dim)."""
    offs = c0 + tl.arange(0, BN)
    m = valid[:, None] & (offs[None, :] < D)
    return tl.load(ptr + tok[:, None] * D + offs[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _cols_ptr_mask(ptr, tok, valid, c0, D: tl.constexpr, BN: tl.constexpr):
    offs = c0 + tl.arange(0, BN)
    return ptr + tok[:, None] * D + offs[None, :], valid[:, None] & (offs[None, :] < D)


@triton.jit
def _head_and_direction(i_bh, i_s, H, BTH, dir_base):
    """(rev, i_b, i_h, gate_off) of program row i_bh = b*H + h in direction i_s of the launch: rev when that
    direction (dir_base + i_s) reads the tokens from the end; gate_off = i_s * B*T*H (int64), where the
    direction's slice of the [NDIR, B, T, H] buffers starts (the gates, and every output indexed by dir_tok)."""
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    return rev, i_b, i_h, gate_off


@triton.jit
def _solve_program(T, H, BTH, dir_base, BC: tl.constexpr, BT: tl.constexpr):
    """(c, i_bh, i_s, valid, tok, gate_off) of a solve-kernel program, grid (NC, B*H, NDIR): its chunk c, row
    i_bh = b*H + h and direction i_s, the chunk's first BT tokens (BT = BC, or the tail tile of the last chunk,
    see _fwd_solve_kernel) and the direction's offset gate_off.

    Loading the chunk's tiles and gates here, or calling _head_and_direction from here, reorders the compiled
    solve kernels and moves their spills (benchmarks/kernel_resources.py): the kernels load them in their own
    order, and the head/direction lines are written out."""
    c = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_s = tl.program_id(2)
    rev = (dir_base + i_s) == 1
    i_b = i_bh // H
    i_h = i_bh % H
    gate_off = i_s.to(tl.int64) * BTH
    valid, tok = _tile_offsets(c * BC, T, H, i_b, i_h, rev, BT)
    return c, i_bh, i_s, valid, tok, gate_off


@triton.jit(do_not_specialize=["T"])
def _fwd_states_kernel(k_ptr, v_ptr, gate_ptr, hk_ptr, hv_ptr,
                       T, H, NBH, BTH, NC, dir_base,
                       D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr,
                       PREC: tl.constexpr, PREFETCH: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr):
    """Columns c0..c0+BN of H_p and S_p at the start of every chunk (docs/gka_spec.md sec. 3 chunk-level scan).

    Grid (B*H, NDIR, BD / BN): the column blocks are independent (H_p[:, J] = sum k k_J^T), which
    multiplies the programs of this sequential scan by BD / BN. PREFETCH: the next chunk's keys, values
    and gates are loaded before this chunk's products, so their latency overlaps the sequential chain
    (the scan is latency-bound at long T, where there are few programs).
    """
    i_bh = tl.program_id(0)
    i_s = tl.program_id(1)
    c0 = tl.program_id(2) * BN
    rev, i_b, i_h, gate_off = _head_and_direction(i_bh, i_s, H, BTH, dir_base)
    Hk = tl.zeros([BD, BN], dtype=tl.float32)
    Sv = tl.zeros([BD, BN], dtype=tl.float32)
    slot0 = (i_s.to(tl.int64) * NBH + i_bh) * NC
    valid, tok = _token_offsets(0, T, H, i_b, i_h, rev, BC)
    nK = _load_rows(k_ptr, tok, valid, D, BD)
    nKn = _load_cols(k_ptr, tok, valid, c0, D, BN)
    nVn = _load_cols(v_ptr, tok, valid, c0, D, BN)
    ngg = tl.load(gate_ptr + gate_off + tok, mask=valid, other=0.0).to(tl.float32)
    for c in range(0, NC):
        tl.store(_state_block_ptr(hk_ptr, slot0 + c, 0, c0, BD, BD, BN), Hk)
        tl.store(_state_block_ptr(hv_ptr, slot0 + c, 0, c0, BD, BD, BN), Sv)
        if PREFETCH:  # this chunk's tiles were loaded last iteration; issue the next chunk's loads now
            K, Kn, Vn, gg = nK, nKn, nVn, ngg
            valid, tok = _token_offsets(c + 1, T, H, i_b, i_h, rev, BC)  # all masked past the last chunk
        else:
            valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
        nK = _load_rows(k_ptr, tok, valid, D, BD)
        nKn = _load_cols(k_ptr, tok, valid, c0, D, BN)
        nVn = _load_cols(v_ptr, tok, valid, c0, D, BN)
        ngg = tl.load(gate_ptr + gate_off + tok, mask=valid, other=0.0).to(tl.float32)
        if not PREFETCH:
            K, Kn, Vn, gg = nK, nKn, nVn, ngg
        G = tl.cumsum(gg, 0)
        g_last = tl.sum(gg, 0)
        Kw = K * tl.exp(g_last - G)[:, None]
        decay = tl.exp(g_last)
        Hk = decay * Hk + _dot(tl.trans(Kw), Kn, PREC, False, K_EXACT)
        Sv = decay * Sv + _dot(tl.trans(Kw), Vn, PREC, False, V_EXACT)


@triton.jit(do_not_specialize=["T"])
def _fwd_solve_kernel(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr,
                      o_ptr, x_ptr, fro_ptr,
                      T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                      ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                      D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, TAIL: tl.constexpr,
                      PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, LEAN: tl.constexpr,
                      PAIRED: tl.constexpr, FOLDED: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr):
    """Per chunk: ||H_t||_F, lambda_t, x_t = A_t^-1 q_t, q'_t, o_t = scale S_t q'_t (docs/gka_spec.md secs. 1-3).

    TAIL < BC: the program of the last chunk, which holds T - (NC - 1) BC <= TAIL tokens, runs on a TAIL-row tile
    (a second specialisation of the same code) instead of a BC-row one: at T = 197 and BC = 64 it has 5 tokens.
    """
    if TAIL < BC:
        if tl.program_id(0) == NC - 1:
            _fwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, o_ptr, x_ptr, fro_ptr,
                            T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                            ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                            D, BD, BC, TAIL, PREC_FIRST, PREC, PREC_HI, LEAN, PAIRED, FOLDED, K_EXACT, V_EXACT)
        else:
            _fwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, o_ptr, x_ptr, fro_ptr,
                            T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                            ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                            D, BD, BC, BC, PREC_FIRST, PREC, PREC_HI, LEAN, PAIRED, FOLDED, K_EXACT, V_EXACT)
    else:
        _fwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, o_ptr, x_ptr, fro_ptr,
                        T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                        ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                        D, BD, BC, BC, PREC_FIRST, PREC, PREC_HI, LEAN, PAIRED, FOLDED, K_EXACT, V_EXACT)


@triton.jit
def _fwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr,
                    o_ptr, x_ptr, fro_ptr,
                    T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                    ridge_ratio, ridge_floor, fro2_floor, scale, out_scale,
                    D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                    PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, LEAN: tl.constexpr,
                    PAIRED: tl.constexpr, FOLDED: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr):
    """The forward solve of one chunk (BC tokens apart) on a BT-row tile.

    Only the Chebyshev steps use PREC_FIRST / PREC dots; the rest uses PREC_HI: q' can be ~1/a = 50
    times larger than q, so the read-out S_t q'_t cancels and needs fp32-accurate products.
    Each direction writes its own slice of o ([NDIR, B, T, H, D]; no atomics), summed by the caller.
    """
    c, i_bh, i_s, valid, tok, gate_off = _solve_program(T, H, BTH, dir_base, BC, BT)
    K = _load_rows(k_ptr, tok, valid, D, BD)
    if K_EXACT:
        K = K.to(tl.bfloat16)  # exact: half the registers of the fp32 tile
    gg, G, M = _chunk_gates(gate_ptr, gate_off, tok, valid, BT)
    eG = tl.exp(G)
    slot = (i_s.to(tl.int64) * NBH + i_bh) * NC + c
    Hp = tl.load(_state_ptr(hk_ptr, slot, BD))

    # ||H_t||_F^2 = e^{2G_t}||H_p||^2 + 2 e^{G_t} sum_j M_tj k_j^T H_p k_j + sum_ij M_ti M_tj (k_i.k_j)^2
    kHk = tl.sum(_dot(K, Hp, PREC_HI, K_EXACT) * K, 1)
    KK = _dot(K, tl.trans(K), PREC_HI, K_EXACT, K_EXACT)
    fro2 = (eG * eG * tl.sum(tl.sum(Hp * Hp, 1), 0)
            + 2.0 * eG * tl.sum(M * kHk[None, :], 1)
            + tl.sum(_dot(M, KK * KK, PREC_HI) * M, 1))
    fro = tl.sqrt(tl.maximum(fro2, fro2_floor))
    lam = tl.maximum(ridge_ratio * fro, ridge_floor)

    dir_tok = gate_off + tok
    q_ptrs, m = _rows_ptr_mask(q_ptr, tok, valid, D, BD)
    x_ptrs, _ = _rows_ptr_mask(x_ptr, dir_tok, valid, D, BD)
    if LEAN:
        X = _solve_lean(q_ptrs, tl.full([BT], 1.0, tl.float32), x_ptrs, m, K, Hp, M, eG, lam, fro,
                        n_first, n_rounds, n_refine, PREC_FIRST, PREC, PREC_HI, PAIRED, FOLDED, K_EXACT)
    else:
        X = _solve(tl.load(q_ptrs, mask=m, other=0.0).to(tl.float32), K, Hp, M, eG, lam, fro,
                   n_first, n_rounds, n_refine, PREC_FIRST, PREC, PREC_HI, PAIRED, FOLDED, K_EXACT)
        tl.store(x_ptrs, X, mask=m)
    Q = tl.load(q_ptrs, mask=m, other=0.0).to(tl.float32)
    alpha = tl.load(a_ptr + tok, mask=valid, other=0.0).to(tl.float32)
    Qp = Q + alpha[:, None] * (X - Q)                  # q'_t = q_t + alpha_t (x_t - q_t)

    V = _load_rows(v_ptr, tok, valid, D, BD)
    Sp = tl.load(_state_ptr(hv_ptr, slot, BD))
    QK = _dot(Qp, tl.trans(K), PREC_HI, False, K_EXACT) * M
    O = scale * (eG[:, None] * _dot(Qp, Sp, PREC_HI)
                 + _dot(QK, V, PREC_HI, False, V_EXACT))

    o_ptrs, _ = _rows_ptr_mask(o_ptr, dir_tok, valid, D, BD)
    tl.store(o_ptrs, out_scale * O, mask=m)
    tl.store(fro_ptr + dir_tok, fro, mask=valid)


@triton.jit(do_not_specialize=["T"])
def _bwd_solve_kernel(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                      dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr, qb_ptr,
                      T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                      ridge_ratio, ridge_floor, scale, out_scale,
                      D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, TAIL: tl.constexpr,
                      PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, PREC_GRAD: tl.constexpr,
                      PREC_LO: tl.constexpr, LEAN: tl.constexpr, PART: tl.constexpr, PAIRED: tl.constexpr,
                      FOLDED: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr, DO_EXACT: tl.constexpr):
    """Per chunk: everything of the backward that needs no later chunk (docs/gka_spec.md sec. 4); the last chunk on
    a TAIL-row tile when TAIL < BC (as in _fwd_solve_kernel)."""
    if TAIL < BC:
        if tl.program_id(0) == NC - 1:
            _bwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                            dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr, qb_ptr,
                            T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                            ridge_ratio, ridge_floor, scale, out_scale,
                            D, BD, BC, TAIL, PREC_FIRST, PREC, PREC_HI, PREC_GRAD, PREC_LO, LEAN, PART, PAIRED, FOLDED,
                            K_EXACT, V_EXACT, DO_EXACT)
        else:
            _bwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                            dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr, qb_ptr,
                            T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                            ridge_ratio, ridge_floor, scale, out_scale,
                            D, BD, BC, BC, PREC_FIRST, PREC, PREC_HI, PREC_GRAD, PREC_LO, LEAN, PART, PAIRED, FOLDED,
                            K_EXACT, V_EXACT, DO_EXACT)
    else:
        _bwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                        dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr, qb_ptr,
                        T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                        ridge_ratio, ridge_floor, scale, out_scale,
                        D, BD, BC, BC, PREC_FIRST, PREC, PREC_HI, PREC_GRAD, PREC_LO, LEAN, PART, PAIRED, FOLDED,
                        K_EXACT, V_EXACT, DO_EXACT)


@triton.jit
def _bwd_solve_tile(q_ptr, k_ptr, v_ptr, a_ptr, gate_ptr, hk_ptr, hv_ptr, x_ptr, fro_ptr, do_ptr,
                    dq_ptr, dk_ptr, dv_ptr, da_ptr, dG_ptr, u_ptr, w_ptr, qb_ptr,
                    T, H, NBH, BTH, NC, dir_base, n_first, n_rounds, n_refine,
                    ridge_ratio, ridge_floor, scale, out_scale,
                    D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                    PREC_FIRST: tl.constexpr, PREC: tl.constexpr, PREC_HI: tl.constexpr, PREC_GRAD: tl.constexpr,
                    PREC_LO: tl.constexpr, LEAN: tl.constexpr, PART: tl.constexpr, PAIRED: tl.constexpr,
                    FOLDED: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr, DO_EXACT: tl.constexpr):
    """The backward solve of one chunk (BC tokens apart) on a BT-row tile.

    dq' from the read-out, xbar = alpha dq', qbar = A^-1 xbar (second Chebyshev solve),
    Hbar_t = -(qbar x^T + x qbar^T)/2 + c_t H_t with c_t = -a (x . qbar) / ||H_t||_F (the ridge term),
    intra-chunk dk/dv and gate terms, and the chunk's increments of the reverse states:
    U_c = sum_t e^{G_t} Hbar_t (covariance, R of sec. 4) and W_c = scale sum_t e^{G_t} q'_t do_t^T (GLA).
    U_c and W_c may be stored over this chunk's H_p and S_p (u_ptr = hk_ptr, w_ptr = hv_ptr: the backward
    then holds two chunk-state buffers, not four); each slot is read and written by this program only.
    Three phases (read-out gradients, solve, covariance gradients) so that only the solve's operands
    are live during the iterations. Outputs are per direction ([NDIR, B, T, H, ...], plain stores, no
    atomics): phase 1 stores its parts of dq/dk, phases 2 and 3 read them back after a barrier.
    PREC_HI: the residuals of the solve; PREC_LO: the four products without cancellation (dv's, k k^T of the
    ridge term, and the two ridge terms scaled by e); PREC_GRAD: every other product (docs/kernels.md).
    PART 0 runs the three phases in one launch; PART 1 (phases 1-2, with LEAN: qbar ends in qb_ptr) and PART 2
    (phase 3) split them into two launches of the same grid, each with fewer live registers.
    """
    c, i_bh, i_s, valid, tok, gate_off = _solve_program(T, H, BTH, dir_base, BC, BT)
    dir_tok = gate_off + tok
    slot = (i_s.to(tl.int64) * NBH + i_bh) * NC + c
    gg, G, M = _chunk_gates(gate_ptr, gate_off, tok, valid, BT)
    eG = tl.exp(G)
    K = _load_rows(k_ptr, tok, valid, D, BD)
    if K_EXACT:
        K = K.to(tl.bfloat16)  # exact: half the registers of the fp32 tile
    alpha = tl.load(a_ptr + tok, mask=valid, other=0.0).to(tl.float32)
    dq_ptrs, m = _rows_ptr_mask(dq_ptr, dir_tok, valid, D, BD)
    dk_ptrs, _ = _rows_ptr_mask(dk_ptr, dir_tok, valid, D, BD)

    if PART != 2:
        # 1. read-out o_t = scale (e^{G_t} S_p^T q'_t + sum_j M_tj (q'_t . k_j) v_j)
        Q = _load_rows(q_ptr, tok, valid, D, BD)
        X = _load_rows(x_ptr, dir_tok, valid, D, BD)
        V = _load_rows(v_ptr, tok, valid, D, BD)
        dO = out_scale * _load_rows(do_ptr, tok, valid, D, BD)
        Sp = tl.load(_state_ptr(hv_ptr, slot, BD))
        Qp = Q + alpha[:, None] * (X - Q)
        dOV = _dot(dO, tl.trans(V), PREC_GRAD, DO_EXACT, V_EXACT) * M
        dQp = scale * (_dot(dOV, K, PREC_GRAD, False, K_EXACT)
                       + eG[:, None] * _dot(dO, tl.trans(Sp), PREC_GRAD, DO_EXACT))
        QK = _dot(Qp, tl.trans(K), PREC_GRAD, False, K_EXACT) * M
        dv_ptrs, _ = _rows_ptr_mask(dv_ptr, dir_tok, valid, D, BD)
        tl.store(dv_ptrs, scale * _dot(tl.trans(QK), dO, PREC_LO, False, DO_EXACT), mask=m)
        dKg = scale * _dot(tl.trans(dOV), Qp, PREC_GRAD)
        tl.store(dk_ptrs, dKg, mask=m)
        # dq holds dq' until the solve has read its right-hand side alpha dq' (LEAN reads it from there)
        tl.store(dq_ptrs, dQp, mask=m)
        tl.store(da_ptr + dir_tok, tl.sum(dQp * (X - Q), 1), mask=valid)
        # gate: read term q'.dq' minus write term k.dk (GLA part)
        dG = tl.sum(Qp * dQp, 1) - tl.sum(K * dKg, 1)
        Wg = scale * _dot(tl.trans(Qp * eG[:, None]), dO, PREC_GRAD, False, DO_EXACT)
        tl.debug_barrier()  # all threads have read S_p: W may overwrite it (the host passes w_ptr = hv_ptr)
        tl.store(_state_ptr(w_ptr, slot, BD), Wg)
        if not LEAN:
            rhs = alpha[:, None] * dQp

        # 2. second solve (sec. 4): qbar = A^-1 xbar, xbar = alpha dq'
        Hp = tl.load(_state_ptr(hk_ptr, slot, BD))
        fro = tl.load(fro_ptr + dir_tok, mask=valid, other=1.0)
        lam = tl.maximum(ridge_ratio * fro, ridge_floor)
        if LEAN:
            qb_ptrs, _ = _rows_ptr_mask(qb_ptr, dir_tok, valid, D, BD)
            tl.debug_barrier()  # the phase-1 stores of dq' are visible to all threads of the program
            Qb = _solve_lean(dq_ptrs, alpha, qb_ptrs, m, K, Hp, M, eG, lam, fro, n_first, n_rounds, n_refine,
                             PREC_FIRST, PREC, PREC_HI, PAIRED, FOLDED, K_EXACT)
        else:
            Qb = _solve(rhs, K, Hp, M, eG, lam, fro, n_first, n_rounds, n_refine, PREC_FIRST, PREC, PREC_HI,
                        PAIRED, FOLDED, K_EXACT)
        tl.debug_barrier()  # the phase-1 stores of this program are visible to all its threads after this
        # dq = (1 - alpha) dq' + qbar
        tl.store(dq_ptrs, (1.0 - alpha)[:, None] * tl.load(dq_ptrs, mask=m, other=0.0) + Qb, mask=m)

        if PART == 1:  # phase 3 runs in a second launch: it reads the partial gate gradient and qbar
            tl.store(dG_ptr + dir_tok, dG, mask=valid)
            if not LEAN:
                qb_ptrs, _ = _rows_ptr_mask(qb_ptr, dir_tok, valid, D, BD)
                tl.store(qb_ptrs, Qb, mask=m)
    else:
        Hp = tl.load(_state_ptr(hk_ptr, slot, BD))
        fro = tl.load(fro_ptr + dir_tok, mask=valid, other=1.0)
        dG = tl.load(dG_ptr + dir_tok, mask=valid, other=0.0)
        qb_ptrs, m = _rows_ptr_mask(qb_ptr, dir_tok, valid, D, BD)
        Qb = tl.load(qb_ptrs, mask=m, other=0.0)

    if PART != 1:
        # 3. covariance and ridge gradients; c_t is zero where the ridge floor is active
        X = _load_rows(x_ptr, dir_tok, valid, D, BD)
        ridge_active = valid & (ridge_ratio * fro > ridge_floor)
        cr = tl.where(ridge_active, -ridge_ratio * tl.sum(X * Qb, 1) / fro, 0.0)
        XK = _dot(X, tl.trans(K), PREC_GRAD, False, K_EXACT) * M
        QbK = _dot(Qb, tl.trans(K), PREC_GRAD, False, K_EXACT) * M
        HX = eG[:, None] * _dot(X, Hp, PREC_GRAD) + _dot(XK, K, PREC_GRAD, False, K_EXACT)
        # e_j = sum_t M_tj c_t e^{G_t};  Wc_ij = sum_t M_ti c_t M_tj
        ce = cr * eG
        e = tl.sum(M * ce[:, None], 0)
        Wc = _dot(tl.trans(M), M * cr[:, None], PREC_GRAD)
        KK = _dot(K, tl.trans(K), PREC_LO, K_EXACT, K_EXACT)
        # (sum_{t>=j in chunk} M_tj Hbar_t) k_j
        RK = (-0.5 * (_dot(tl.trans(XK), Qb, PREC_GRAD)
                      + _dot(tl.trans(QbK), X, PREC_GRAD))
              + e[:, None] * _dot(K, Hp, PREC_LO, K_EXACT)
              + _dot(Wc * KK, K, PREC_GRAD, False, K_EXACT))
        tl.store(dk_ptrs, tl.load(dk_ptrs, mask=m, other=0.0) + 2.0 * RK, mask=m)
        # gate: read term <Hbar_t, H_t> = -qbar.(H x) + c ||H||^2, minus write term k^T R k
        dG += -tl.sum(Qb * HX, 1) + cr * fro * fro - tl.sum(K * RK, 1)
        tl.store(dG_ptr + dir_tok, dG, mask=valid)

        sigma = tl.sum(ce * eG, 0)
        # sum_t e^{G_t} (x_t qbar_t^T + qbar_t x_t^T) = P + P^T: one product instead of two
        P = _dot(tl.trans(X * eG[:, None]), Qb, PREC_GRAD)
        U = -0.5 * (P + tl.trans(P)) + sigma * Hp + _dot(tl.trans(K * e[:, None]), K, PREC_LO, False, K_EXACT)
        tl.debug_barrier()  # all threads have read H_p: U may overwrite it (the host passes u_ptr = hk_ptr)
        tl.store(_state_ptr(u_ptr, slot, BD), U)


@triton.jit(do_not_specialize=["T"])
def _bwd_states_kernel(k_ptr, v_ptr, gate_ptr, u_ptr, w_ptr, dk_ptr, dv_ptr, dgp_ptr,
                       T, H, NBH, BTH, NC, dir_base,
                       D: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr,
                       PREC: tl.constexpr, PREFETCH: tl.constexpr, K_EXACT: tl.constexpr, V_EXACT: tl.constexpr):
    """Reverse chunk scan of R (sum of later e^{..} Hbar_t, docs/gka_spec.md sec. 4) and of the GLA state gradient dS.

    Grid (B*H, NDIR, BD / BN): program n owns columns J = n*BN.. of dk and dv, so it carries R[:, J],
    dS[J, :] (for dk = V dS^T) and dS[:, J] (for dv = K dS). Adds the inter-chunk parts to the per-direction
    dk/dv written by _bwd_solve_kernel and stores its share of the write terms k.dk_gla + k^T R k of
    dL/dG^glob into dgp[n] (the caller subtracts their sum and takes the reverse cumsum in scan order).
    """
    i_bh = tl.program_id(0)
    i_s = tl.program_id(1)
    i_n = tl.program_id(2)
    c0 = i_n * BN
    rev, i_b, i_h, gate_off = _head_and_direction(i_bh, i_s, H, BTH, dir_base)
    R = tl.zeros([BD, BN], dtype=tl.float32)
    dS_rows = tl.zeros([BN, BD], dtype=tl.float32)
    dS_cols = tl.zeros([BD, BN], dtype=tl.float32)
    slot0 = (i_s.to(tl.int64) * NBH + i_bh) * NC
    dgp_off = i_n.to(tl.int64) * tl.num_programs(1) * BTH
    for ci in range(0, NC):
        c = NC - 1 - ci
        valid, tok = _token_offsets(c, T, H, i_b, i_h, rev, BC)
        dir_tok = gate_off + tok
        slot = slot0 + c
        if PREFETCH:  # this chunk's state increments: loaded first, used after the products below
            U = tl.load(_state_block_ptr(u_ptr, slot, 0, c0, BD, BD, BN))
            W_rows = tl.load(_state_block_ptr(w_ptr, slot, c0, 0, BD, BN, BD))
            W_cols = tl.load(_state_block_ptr(w_ptr, slot, 0, c0, BD, BD, BN))
        K = _load_rows(k_ptr, tok, valid, D, BD)
        V = _load_rows(v_ptr, tok, valid, D, BD)
        Kn = _load_cols(k_ptr, tok, valid, c0, D, BN)
        gg = tl.load(gate_ptr + dir_tok, mask=valid, other=0.0).to(tl.float32)
        G = tl.cumsum(gg, 0)
        g_last = tl.sum(gg, 0)
        w = tl.where(valid, tl.exp(g_last - G), 0.0)
        RK = w[:, None] * _dot(K, R, PREC, K_EXACT)
        dKg = w[:, None] * _dot(V, tl.trans(dS_rows), PREC, V_EXACT)
        dV = w[:, None] * _dot(K, dS_cols, PREC, K_EXACT)
        dk_ptrs, m = _cols_ptr_mask(dk_ptr, dir_tok, valid, c0, D, BN)
        tl.store(dk_ptrs, tl.load(dk_ptrs, mask=m, other=0.0) + dKg + 2.0 * RK, mask=m)
        dv_ptrs, _ = _cols_ptr_mask(dv_ptr, dir_tok, valid, c0, D, BN)
        tl.store(dv_ptrs, tl.load(dv_ptrs, mask=m, other=0.0) + dV, mask=m)
        tl.store(dgp_ptr + dgp_off + dir_tok, tl.sum(Kn * dKg, 1) + tl.sum(Kn * RK, 1), mask=valid)
        decay = tl.exp(g_last)
        if not PREFETCH:
            U = tl.load(_state_block_ptr(u_ptr, slot, 0, c0, BD, BD, BN))
            W_rows = tl.load(_state_block_ptr(w_ptr, slot, c0, 0, BD, BN, BD))
            W_cols = tl.load(_state_block_ptr(w_ptr, slot, 0, c0, BD, BD, BN))
        R = decay * R + U
        dS_rows = decay * dS_rows + W_rows
        dS_cols = decay * dS_cols + W_cols


@triton.jit(do_not_specialize=["T"])
def _gate_grad_kernel(dG_ptr, dgp_ptr, dg_ptr, T, H, BTH, NDIR_BTH, dir_base,
                      NPART: tl.constexpr, BLOCK: tl.constexpr):
    """Gate gradient of one (b*H + h, direction) row, grid (B*H, NDIR): d_m = dG_m - sum_n dgp[n]_m (the read terms of
    _bwd_solve_kernel minus the write terms of _bwd_states_kernel, [NPART, NDIR, B, T, H]), then dg_m = the sum of d
    over the scan positions >= m (g_m enters the cumulative gate of every later position; module doc). Blocks of
    BLOCK positions from the last, with a running carry; dg_ptr may be dG_ptr (each block is read before it is
    written, by this program only)."""
    rev, i_b, i_h, gate_off = _head_and_direction(tl.program_id(0), tl.program_id(1), H, BTH, dir_base)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    nblk = tl.cdiv(T, BLOCK)
    for bi in range(0, nblk):
        valid, tok = _tile_offsets((nblk - 1 - bi) * BLOCK, T, H, i_b, i_h, rev, BLOCK)
        d = tl.load(dG_ptr + gate_off + tok, mask=valid, other=0.0)
        part_ptrs = dgp_ptr + gate_off + tok
        for _ in tl.static_range(NPART):
            d -= tl.load(part_ptrs, mask=valid, other=0.0)
            part_ptrs += NDIR_BTH  # the next part: pointer arithmetic is 64-bit
        total = tl.sum(d, 0)
        tl.store(dg_ptr + gate_off + tok, carry + (total - tl.cumsum(d, 0) + d), mask=valid)
        carry += total


@triton.jit
def _sum_directions_kernel(src_ptr, dst_ptr, n, NDIR: tl.constexpr, BLOCK: tl.constexpr):
    """dst[i] = sum over d < NDIR of src[d * n + i] (fp32), stored in dst's dtype: the per-direction results of
    the kernels above summed and cast in one pass."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(src_ptr + offs, mask=mask, other=0.0)
    for d in tl.static_range(1, NDIR):
        acc += tl.load(src_ptr + d * n + offs, mask=mask, other=0.0)
    tl.store(dst_ptr + offs, acc.to(dst_ptr.dtype.element_ty), mask=mask)
