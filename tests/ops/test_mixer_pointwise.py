"""The mixers' fused per-token kernels (gka_kernels.mixer_pointwise) against their PyTorch chains under
TRITON_INTERPRET=1 (small fp32 cases, forward and gradients; bf16 inputs for the dtypes), and the mixers with
fuse_pointwise on against off on the Triton scan backend.

The interpreter is chosen when kernels are decorated, so the checks run in a fresh subprocess."""
import textwrap

import pytest

from interpreted import run_interpreted, tagged_json  # tests/interpreted.py

pytest.importorskip("triton")

_SCRIPT = textwrap.dedent(r"""
    import json, torch
    import torch.nn.functional as F
    from gka_kernels.mixer_pointwise import gated_rms_norm, qk_norm_beta
    from gka_vision.layers.mixer_parts import fused_pointwise_on, normalize_qk_scale_beta
    from gka_vision.layers.norm import GatedRMSNorm

    def rel(a, b):
        return (a.double() - b.double()).abs().max().item() / max(a.double().abs().max().item(), 1e-6)

    out = {}
    torch.manual_seed(0)
    cases = []
    # (B, N, H, D): odd head dim, head dim 40 padded to 64 inside, more rows than one program's 32
    for (B, N, H, D) in [(2, 5, 3, 7), (1, 13, 4, 40), (3, 11, 2, 16)]:
        qkv = torch.randn(B, N, 3, H, D)
        qkv[0, 0, 0, 0].zero_()                                # a zero q row: |q| < eps
        qkv[0, 1, 1, H - 1].mul_(1e-8)                         # a k row far below eps
        qkv.requires_grad_()
        q, k, v = qkv.unbind(2)                                # the models' views: q, k, v of one projection
        proj = torch.randn(B, N, H + 5).requires_grad_()       # the logits: a strided slice of a projection
        logit = proj[..., 2:H + 2]
        ref = normalize_qk_scale_beta(q, k, v, torch.sigmoid(logit).unsqueeze(-1), False)
        fused = qk_norm_beta(q, k, v, logit, torch.float32)
        gs = [torch.randn_like(t) for t in ref]
        gr = torch.autograd.grad(ref, [qkv, proj], gs)
        gf = torch.autograd.grad(fused, [qkv, proj], gs)
        x = torch.randn(B, N, H, D); x[0, 0, 0].zero_(); x.requires_grad_()
        gsrc = torch.randn(B, N, H * D + 3).requires_grad_()
        gate = gsrc[..., 3:].view(B, N, H, D)
        norm = GatedRMSNorm(D)
        with torch.no_grad():
            norm.weight.normal_()
        norms = []
        for g in (gate, None):
            yr, yf = norm(x, g), gated_rms_norm(x, norm.weight, g, norm.eps)
            dy = torch.randn_like(yr)
            ins = [x, norm.weight] + ([gsrc] if g is not None else [])
            a, b = torch.autograd.grad(yr, ins, dy), torch.autograd.grad(yf, ins, dy)
            norms.append(dict(fwd=rel(yr, yf), grads=[rel(i, j) for i, j in zip(a, b)]))
        cases.append(dict(shape=[B, N, H, D], qk_fwd=[rel(a, b) for a, b in zip(ref, fused)],
                          qk_grads=[rel(a, b) for a, b in zip(gr, gf)],
                          finite=all(bool(t.isfinite().all()) for t in list(fused) + list(gf)), norms=norms))
    out["cases"] = cases

    # create_graph=True (a gradient penalty) is refused: the fused backward has no second-order terms
    qkv2 = torch.randn(1, 3, 3, 2, 4, requires_grad=True)
    logit2 = torch.randn(1, 3, 2, requires_grad=True)
    x2, w2 = torch.randn(1, 3, 2, 4, requires_grad=True), torch.ones(4, requires_grad=True)
    double = []
    for fn, ins in ((lambda: qk_norm_beta(*qkv2.unbind(2), logit2, torch.float32)[1], [qkv2]),
                    (lambda: gated_rms_norm(x2, w2), [x2])):
        try:
            torch.autograd.grad(fn().square().sum(), ins, create_graph=True)
            double.append("no error")
        except RuntimeError as e:
            double.append("raised" if "fuse_pointwise=False" in str(e) else str(e))
    out["double_backward"] = double

    # bf16 inputs (autocast's projections): the chain's dtypes, and values within bf16 rounding of the chain run in
    # float64 on the same inputs
    torch.manual_seed(1)
    qkv = torch.randn(2, 6, 3, 2, 8).bfloat16().requires_grad_()
    q, k, v = qkv.unbind(2)
    logit = torch.randn(2, 6, 2).bfloat16().requires_grad_()
    exact = normalize_qk_scale_beta(q.double(), k.double(), v.double(), torch.sigmoid(logit.double()).unsqueeze(-1))
    gs = [torch.randn(t.shape) for t in exact]
    g_exact = torch.autograd.grad(exact, [qkv, logit], gs)
    dt = {}
    for qk_dtype in (torch.float32, torch.bfloat16):
        if qk_dtype == torch.float32:  # F.normalize under CUDA autocast: fp32 norms
            ref = normalize_qk_scale_beta(q.float(), k.float(), v, torch.sigmoid(logit).unsqueeze(-1), False)
        else:
            ref = normalize_qk_scale_beta(q, k, v, torch.sigmoid(logit).unsqueeze(-1), True)
        fused = qk_norm_beta(q, k, v, logit, qk_dtype)
        gf = torch.autograd.grad(fused, [qkv, logit], [g.to(t.dtype) for g, t in zip(gs, fused)])
        dt[str(qk_dtype)] = dict(ref=[str(t.dtype) for t in ref], fused=[str(t.dtype) for t in fused],
                                 grads=[str(t.dtype) for t in gf], fwd=[rel(a, b) for a, b in zip(exact, fused)],
                                 grad_err=[rel(a, b) for a, b in zip(g_exact, gf)])
    out["bf16"] = dt

    # the dispatch: on for the Triton backend in eager mode, off for the torch backend, when disabled, under
    # torch.jit tracing and under torch.compile (which traces the chain)
    x = torch.randn(2, 3)
    traced = []
    torch.jit.trace(lambda t: (traced.append(fused_pointwise_on(True, "triton", t)), t + 1)[1], (x,))
    seen = []
    def probe(t):
        seen.append(fused_pointwise_on(True, "triton", t))
        return t * 2
    torch.compile(probe, backend="eager", fullgraph=True)(x)
    out["dispatch"] = dict(eager=fused_pointwise_on(True, "triton", x), torch=fused_pointwise_on(True, "torch", x),
                           off=fused_pointwise_on(False, "triton", x), traced=traced[0], compiled=seen[0])

    # whole mixers on the Triton scan: fuse_pointwise on against off, forward and every gradient
    from gka_vision.layers import BidirectionalGKAMixer, GKAVisionMixer
    import gka_kernels.mixer_pointwise as mp
    calls = {"qk_norm_beta": 0, "gated_rms_norm": 0}
    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper
    mp.qk_norm_beta = counted("qk_norm_beta", mp.qk_norm_beta)
    mp.gated_rms_norm = counted("gated_rms_norm", mp.gated_rms_norm)
    mixers = []
    for name, make, hw in (("BidirectionalGKAMixer", lambda: BidirectionalGKAMixer(16, 2, num_iter=8), (3, 3)),
                           ("GKAVisionMixer", lambda: GKAVisionMixer(16, 4, num_iter=8), None)):
        torch.manual_seed(2)
        m = make()
        m.backend = "triton"
        x = torch.randn(2, 9, 16)
        res = []
        for fuse in (False, True):
            m.fuse_pointwise = fuse
            before = dict(calls)
            xi = x.clone().requires_grad_()
            o = m(xi, hw)
            res.append((o, torch.autograd.grad(o.square().sum(), [xi] + list(m.parameters()))))
            used = [calls[n] - before[n] for n in calls]
        mixers.append(dict(name=name, fwd=rel(res[0][0], res[1][0]), fused_calls=used,
                           grads=[rel(a, b) for a, b in zip(res[0][1], res[1][1])]))
    out["mixers"] = mixers
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    return tagged_json(run_interpreted(_SCRIPT, timeout=900), "RESULT")


def test_fused_kernels_match_pytorch_chains_fp32(result):
    assert len(result["cases"]) == 3
    for c in result["cases"]:
        assert c["finite"], c
        assert max(c["qk_fwd"]) < 1e-5 and max(c["qk_grads"]) < 1e-5, c
        assert len(c["norms"]) == 2
        for n in c["norms"]:  # with the gate, then without
            assert n["fwd"] < 1e-5 and max(n["grads"]) < 1e-5, c


def test_fused_qk_norm_beta_dtypes_follow_the_chain(result):
    fp32, bf16 = result["bf16"]["torch.float32"], result["bf16"]["torch.bfloat16"]
    assert fp32["fused"] == fp32["ref"] == ["torch.float32", "torch.float32", "torch.bfloat16"], fp32
    assert bf16["fused"] == bf16["ref"] == ["torch.bfloat16"] * 3, bf16
    for d in (fp32, bf16):
        assert d["grads"] == ["torch.bfloat16", "torch.bfloat16"], d
        # the interpreter truncates fp32 -> bf16 casts (2^-7 relative, up to three roundings of kn); on CUDA they
        # round to nearest (tests/gpu/test_models_gpu.py checks 8e-3 there)
        assert max(d["fwd"]) < 3e-2 and max(d["grad_err"]) < 3e-2, d


def test_fused_double_backward_raises(result):
    assert result["double_backward"] == ["raised", "raised"], result["double_backward"]


def test_fused_dispatch(result):
    assert result["dispatch"] == dict(eager=True, torch=False, off=False, traced=False, compiled=False)


def test_mixers_fused_match_unfused(result):
    assert [m["name"] for m in result["mixers"]] == ["BidirectionalGKAMixer", "GKAVisionMixer"]
    for m in result["mixers"]:
        assert m["fused_calls"] == [1, 1], m  # the fused run called both kernels once
        assert m["fwd"] < 1e-5 and max(m["grads"]) < 1e-4, m
