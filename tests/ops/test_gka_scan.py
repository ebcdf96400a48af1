"""The GKA core op: the chunked PyTorch backend against the float64 token-by-token reference."""
import pytest
import torch
import torch.nn.functional as F

from gka_vision.ops import gka_scan, gka_scan_bidirectional, gka_scan_chunked, gka_scan_macs, set_debug_checks


def make_inputs(B, T, H, D, seed=0, dtype=torch.float32, zero_keys_until=0):
    """Random inputs shaped as the mixer produces them: unit q, k; k, v scaled by beta; gates <= 0."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    beta = torch.rand(B, T, H, 1, generator=gen)
    k, v = k * beta, torch.randn(B, T, H, D, generator=gen) * beta
    k[:, :zero_keys_until] = 0
    alpha = torch.rand(B, T, H, generator=gen)
    g = -F.softplus(torch.randn(B, T, H, generator=gen) - 1.0)
    return q.to(dtype), k.to(dtype), v.to(dtype), alpha, g


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "NaN/inf in result"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def grads(fn, inputs, weight):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad((out.double() * weight).sum(), inputs)


CASES = [  # (T, D, H, reverse): odd T, T across 64-token chunks, D not a power of two, H in {1, 3}
    (1, 32, 1, False), (7, 40, 3, True), (7, 64, 1, False), (70, 40, 1, True),
    (197, 64, 1, False), (197, 32, 3, True), (130, 40, 3, False),
]


@pytest.mark.parametrize("T,D,H,reverse", CASES)
def test_torch_backend_matches_reference_fp32(T, D, H, reverse):
    x = make_inputs(2, T, H, D, seed=T * D + H)
    weight = torch.randn(2, T, H, D, dtype=torch.float64)
    ref, gref = grads(lambda *a: gka_scan(*a, reverse=reverse, backend="reference"), x, weight)
    out, gout = grads(lambda *a: gka_scan(*a, reverse=reverse, backend="torch"), x, weight)
    assert out.dtype == torch.float32 and out.shape == (2, T, H, D)
    assert rel(out, ref) <= 1e-3
    for name, a, b in zip("q k v alpha g".split(), gout, gref):
        assert rel(a, b) <= 5e-3, f"gradient of {name}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_backend_half_inputs(dtype):
    x = make_inputs(2, 67, 2, 32, seed=3, dtype=dtype)
    weight = torch.randn(2, 67, 2, 32, dtype=torch.float64)
    ref, gref = grads(lambda *a: gka_scan(*a, backend="reference"), x, weight)
    out, gout = grads(lambda *a: gka_scan(*a, backend="torch"), x, weight)
    assert out.dtype == dtype
    # the inputs are the same half-precision numbers; only the output rounding differs
    assert rel(out, ref) <= 1e-2
    for name, a, b in zip("q k v alpha g".split(), gout, gref):
        assert rel(a, b) <= 3e-2, f"gradient of {name}"


@pytest.mark.parametrize("T,chunk", [(50, 16), (33, 8), (64, 16), (17, 64)])
def test_chunked_equals_token_by_token_exactly(T, chunk):
    """In float64 with a converged solve, the chunked algorithm is the recurrence, to round-off,
    for T across chunk boundaries and a separate key-covariance gate gk."""
    q, k, v, alpha, g = (t.double() for t in make_inputs(2, T, 2, 24, seed=T))
    gk = -F.softplus(torch.randn(2, T, 2, dtype=torch.float64))
    x = (q, k, v, alpha, g, gk)
    weight = torch.randn(2, T, 2, 24, dtype=torch.float64)
    ref, gref = grads(lambda q, k, v, a, g, gk: gka_scan(q, k, v, a, g, gk=gk, backend="reference"), x, weight)
    out, gout = grads(lambda q, k, v, a, g, gk: gka_scan_chunked(q, k, v, a, g, gk, num_iter=200,
                                                                 chunk_size=chunk), x, weight)
    assert rel(out, ref) < 1e-10
    for name, a, b in zip("q k v alpha g gk".split(), gout, gref):
        assert rel(a, b) < 1e-9, f"gradient of {name}"


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_reverse_is_flip_scan_flip(backend):
    q, k, v, alpha, g = make_inputs(1, 45, 2, 16, seed=5)
    flip = lambda t: t.flip(1)  # noqa: E731
    rev = gka_scan(q, k, v, alpha, g, reverse=True, backend=backend)
    ffl = flip(gka_scan(flip(q), flip(k), flip(v), flip(alpha), flip(g), backend=backend))
    assert rel(rev, ffl) < 1e-6
    fwd = gka_scan(q, k, v, alpha, g, backend=backend)
    assert rel(rev, fwd) > 1e-2  # the direction matters


def test_bidirectional_is_the_mean_of_both_directions():
    q, k, v, alpha, g = make_inputs(2, 30, 2, 16, seed=9)
    g_rev = -F.softplus(torch.randn(2, 30, 2))
    bi = gka_scan_bidirectional(q, k, v, alpha, g, g_rev, backend="torch")
    fwd = gka_scan(q, k, v, alpha, g, backend="torch")
    bwd = gka_scan(q, k, v, alpha, g_rev, reverse=True, backend="torch")
    assert rel(bi, 0.5 * (fwd + bwd)) < 1e-6


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_all_zero_keys_give_finite_outputs_and_gradients(backend):
    """H_t = 0 makes the ridge system singular without the floor of docs/gka_spec.md section 2."""
    x = make_inputs(2, 20, 2, 16, seed=1, zero_keys_until=20)
    out, gs = grads(lambda *a: gka_scan(*a, backend=backend), x, torch.randn(2, 20, 2, 16, dtype=torch.float64))
    assert torch.isfinite(out).all() and out.abs().max() == 0  # S = 0 as well
    assert all(torch.isfinite(t).all() for t in gs)
    x = make_inputs(2, 20, 2, 16, seed=1, zero_keys_until=11)  # zero prefix, then real keys
    out, gs = grads(lambda *a: gka_scan(*a, backend=backend), x, torch.randn(2, 20, 2, 16, dtype=torch.float64))
    assert torch.isfinite(out).all() and all(torch.isfinite(t).all() for t in gs)


def test_zero_key_prefix_backends_agree():
    x = make_inputs(2, 20, 2, 16, seed=2, zero_keys_until=6)
    assert rel(gka_scan(*x, backend="torch"), gka_scan(*x, backend="reference")) < 1e-3


def test_fewer_iterations_are_less_accurate():
    """The solve is really iterated: 3 Chebyshev steps are far from the exact ridge solution."""
    x = make_inputs(1, 40, 1, 32, seed=4)
    ref = gka_scan(*x, backend="reference")
    assert rel(gka_scan(*x, num_iter=3, backend="torch"), ref) > 10 * rel(gka_scan(*x, backend="torch"), ref)


def test_autocast_does_not_downcast_the_solver():
    x = make_inputs(1, 33, 2, 16, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gka_scan(*x, backend="torch")
    assert out.dtype == torch.float32
    assert rel(out, gka_scan(*x, backend="reference")) <= 1e-3


def test_bad_inputs_raise_clear_errors():
    q, k, v, alpha, g = make_inputs(1, 8, 2, 16)
    with pytest.raises(ValueError, match="unknown backend 'cuda_fast'"):
        gka_scan(q, k, v, alpha, g, backend="cuda_fast")
    with pytest.raises(ValueError, match=r"q must be \[B, T, H, D\]"):
        gka_scan(q[0], k[0], v[0], alpha[0], g[0])
    with pytest.raises(ValueError, match="k shape"):
        gka_scan(q, k[:, :4], v, alpha, g)
    with pytest.raises(ValueError, match="alpha must be"):
        gka_scan(q, k, v, alpha[..., :1], g)
    with pytest.raises(ValueError, match="needs CUDA"):
        gka_scan(q, k, v, alpha, g, backend="triton")
    bad = q.clone()
    bad[0, 3, 1, 2] = float("nan")
    set_debug_checks(True)
    try:
        with pytest.raises(FloatingPointError, match="input q contains NaN"):
            gka_scan(bad, k, v, alpha, g)
        with pytest.raises(ValueError, match="gate g must be <= 0"):
            gka_scan(q, k, v, alpha, -g)
    finally:
        set_debug_checks(False)


def test_fvcore_counts_the_op_with_its_formula():
    from fvcore.nn import FlopCountAnalysis

    from gka_vision.ops import FVCORE_HANDLES

    class Mixer(torch.nn.Module):
        def forward(self, q, k, v, a, g):
            return gka_scan_bidirectional(q, k, v, a, g, g, num_iter=7, backend="torch")

    x = make_inputs(2, 10, 3, 8)
    fca = FlopCountAnalysis(Mixer(), x).set_op_handle(**FVCORE_HANDLES)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert fca.total() == gka_scan_macs(2, 10, 3, 8, num_iter=7, directions=2) > 0
    assert fca.by_operator() == {"gka_scan_bidirectional": fca.total()}


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_empty_sequence_gives_empty_outputs_and_gradients(backend):
    """T = 0 is an empty result (and empty gradients) for every backend, through both ops."""
    q, k, v, alpha, g = (t.requires_grad_() for t in make_inputs(2, 0, 3, 16))
    g2 = g.detach().clone().requires_grad_()
    ops = torch.ops.gka_vision
    one = ops.gka_scan(q, k, v, alpha, g, None, 0.02, 30, 0.25, False, backend, "")[0]
    bi = ops.gka_scan_bidirectional(q, k, v, alpha, g, g2, 0.02, 30, 0.25, False, backend, "")[0]
    for o in (one, bi):
        assert o.shape == (2, 0, 3, 16) and o.dtype == q.dtype
    grads = torch.autograd.grad((one.sum() + bi.sum()), [q, k, v, alpha, g, g2])
    assert [t.shape for t in grads] == [t.shape for t in (q, k, v, alpha, g, g2)]
    if backend != "triton":  # the public functions (triton needs CUDA or the interpreter to be chosen)
        assert gka_scan(q, k, v, alpha, g, backend=backend).shape == (2, 0, 3, 16)
        assert gka_scan_bidirectional(q, k, v, alpha, g, g2, backend=backend).shape == (2, 0, 3, 16)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["q", "k", "v", "alpha", "g"])
def test_a_nan_token_reaches_no_earlier_output(name, reverse):
    """A NaN at token t (inside a 64-token chunk, with earlier tokens of its chunk) leaves every output before t
    (after t for the reverse scan) exactly as without it, and the torch backend puts NaN exactly where the
    token-by-token reference does: at t for q and alpha (read by token t only), from t on for k, v and g."""
    T, t0 = 50, 37
    x = dict(zip(["q", "k", "v", "alpha", "g"], make_inputs(2, T, 2, 16, seed=7)))
    clean = gka_scan(*x.values(), reverse=reverse, backend="torch")
    bad = {n: t.clone() for n, t in x.items()}
    bad[name][(0, t0, 1, 3) if bad[name].dim() == 4 else (0, t0, 1)] = float("nan")
    ref = gka_scan(*bad.values(), reverse=reverse, backend="reference")
    out = gka_scan(*bad.values(), reverse=reverse, backend="torch")
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    # v_t enters only row i of the value state: one NaN entry of v gives one NaN entry of the outputs
    assert torch.isnan(out[0, t0, 1]).sum() == (1 if name == "v" else 16)
    before = slice(t0 + 1, None) if reverse else slice(0, t0)
    torch.testing.assert_close(out[:, before], clean[:, before], rtol=0, atol=0)
    torch.testing.assert_close(out[1], clean[1], rtol=0, atol=0)  # the other batch element
    torch.testing.assert_close(out[:, :, 0], clean[:, :, 0], rtol=0, atol=0)  # the other head
    if name in ("q", "alpha"):  # read by its own token only: every other output is unchanged
        keep = torch.ones(T, dtype=torch.bool)
        keep[t0] = False
        torch.testing.assert_close(out[0, keep, 1], clean[0, keep, 1], rtol=0, atol=0)
    # the bidirectional op: both directions read the bad token, so only that token's output is NaN for q
    # and alpha, and no output before it from the forward direction mixes in (they are all NaN for k, v, g)
    bi = gka_scan_bidirectional(*bad.values(), bad["g"], backend="torch")
    bi_ref = gka_scan_bidirectional(*bad.values(), bad["g"], backend="reference")
    assert torch.equal(torch.isnan(bi), torch.isnan(bi_ref))


def test_nan_gradients_stay_nan():
    """Sanitising the chunk products must not hide a NaN from the optimizer: a NaN input gives NaN gradients
    (GradScaler and NaN guards skip the step), as autograd through the reference does."""
    x = [t.requires_grad_() for t in make_inputs(1, 20, 1, 8, seed=3)]
    with torch.no_grad():
        x[1][0, 5, 0, 2] = float("nan")
    for backend in ("reference", "torch"):
        grads = torch.autograd.grad(gka_scan(*x, backend=backend).sum(), x)
        assert all(torch.isnan(gr).any() for gr in grads), backend
