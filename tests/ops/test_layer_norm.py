"""gka_kernels.layer_norm (the blocks' LayerNorm with the autocast dtype out) against F.layer_norm under
TRITON_INTERPRET=1 (small fp32 cases, forward and gradients; bf16 output), and AutocastLayerNorm's dispatch and
dtypes. The interpreter is chosen when kernels are decorated, so the kernel checks run in a fresh subprocess."""
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from interpreted import run_interpreted, tagged_json  # tests/interpreted.py

from gka_vision.layers.norm import AutocastLayerNorm, GatedRMSNorm, autocast_output_dtype, fused_norm_on

_SCRIPT = textwrap.dedent(r"""
    import json, torch
    import torch.nn.functional as F
    import gka_kernels.layer_norm as ln
    from gka_vision.layers.norm import AutocastLayerNorm

    def rel(a, b):
        return (a.double() - b.double()).abs().max().item() / max(a.double().abs().max().item(), 1e-6)

    out = {}
    torch.manual_seed(0)
    ln._BWD_PROGRAMS = 3  # fewer backward programs than row blocks: each accumulates dweight over several
    cases = []
    # (rows, C): one row, odd widths, a width that is not a power of two (192 in 256 columns), many row blocks
    for shape in [(1, 7), (3, 5, 33), (2, 40, 192), (70, 300)]:
        C = shape[-1]
        src = torch.randn(*shape[:-1], C + 3) * 3 + 1.5
        src[(0,) * (len(shape) - 1)][:C] = 2.0               # a constant row: variance 0, rstd = eps^-0.5
        src.requires_grad_()
        x = src[..., 1:C + 1]                               # a strided view (rows of stride C + 3)
        w, b = torch.randn(C, requires_grad=True), torch.randn(C, requires_grad=True)
        ref = F.layer_norm(x.double(), (C,), w.double(), b.double(), 1e-6)
        y = ln.layer_norm(x, w, b, 1e-6)
        dy = torch.randn_like(ref)
        gr = torch.autograd.grad(ref, [src, w, b], dy)
        gy = torch.autograd.grad(y, [src, w, b], dy.float())
        yb = ln.layer_norm(x, w, b, 1e-6, torch.bfloat16)   # fp32 in, bf16 out (the blocks under autocast)
        gb = torch.autograd.grad(yb, [src, w, b], dy.bfloat16())
        cases.append(dict(shape=list(shape), fwd=rel(ref, y), grads=[rel(a, c) for a, c in zip(gr, gy)],
                          dtypes=[str(y.dtype), str(yb.dtype)] + [str(g.dtype) for g in gb],
                          bf16_fwd=rel(ref, yb), bf16_grads=[rel(a, c) for a, c in zip(gr, gb)],
                          finite=all(bool(t.isfinite().all()) for t in [y, yb, *gy, *gb])))
    out["cases"] = cases
    empty = ln.layer_norm(torch.randn(0, 8), torch.ones(8), torch.zeros(8))
    out["empty"] = list(empty.shape)
    xd = torch.randn(2, 4, requires_grad=True)
    try:
        torch.autograd.grad(ln.layer_norm(xd, torch.ones(4), torch.zeros(4)).square().sum(), [xd], create_graph=True)
        out["double"] = "no error"
    except RuntimeError as e:
        out["double"] = "raised" if "double backward" in str(e) else str(e)

    # the module on the kernel (interpreter, no autocast): same values and gradients as nn.LayerNorm
    calls = []
    fn = ln.layer_norm
    ln.layer_norm = lambda *a: (calls.append(1), fn(*a))[1]
    m, ref_m = AutocastLayerNorm(24, eps=1e-5, fused_min_numel=0), torch.nn.LayerNorm(24, eps=1e-5)
    with torch.no_grad():
        m.weight.normal_(); m.bias.normal_()
    ref_m.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 24, requires_grad=True)
    y, yr = m(x), ref_m(x)
    g = torch.autograd.grad(y.sum(), [x, m.weight, m.bias])
    gr = torch.autograd.grad(yr.sum(), [x, ref_m.weight, ref_m.bias])
    out["module"] = dict(calls=len(calls), fwd=rel(yr, y), grads=[rel(a, b) for a, b in zip(gr, g)])
    # the size threshold: below fused_min_numel elements (the default's millions) PyTorch's op, from it on the kernel
    small = AutocastLayerNorm(24)
    small.load_state_dict(m.state_dict())
    n0 = len(calls)
    out["threshold"] = dict(default=rel(yr, small(x)), default_calls=len(calls) - n0)
    small.fused_min_numel = x.numel()
    small(x)
    out["threshold"]["at_numel_calls"] = len(calls) - n0
    print("RESULT" + json.dumps(out))
""")


def test_layer_norm_kernel_matches_the_float64_layer_norm():
    pytest.importorskip("triton")
    out = tagged_json(run_interpreted(_SCRIPT), "RESULT")
    for case in out["cases"]:
        assert case["finite"], case
        assert case["fwd"] < 1e-5 and max(case["grads"]) < 1e-4, case
        # bf16 out: the values rounded once (2^-9 relative); the gradients from a bf16 upstream gradient
        assert case["dtypes"] == ["torch.float32", "torch.bfloat16", "torch.float32", "torch.float32",
                                  "torch.float32"], case
        assert case["bf16_fwd"] < 8e-3 and max(case["bf16_grads"]) < 3e-2, case
    assert out["empty"] == [0, 8]
    assert out["double"] == "raised"
    assert out["module"]["calls"] == 1
    assert out["module"]["fwd"] < 1e-5 and max(out["module"]["grads"]) < 1e-4
    assert out["threshold"]["default_calls"] == 0 and out["threshold"]["default"] < 1e-5   # small: PyTorch's op
    assert out["threshold"]["at_numel_calls"] == 1


def test_autocast_layer_norm_rounds_to_the_autocast_dtype_as_its_consumers_would():
    torch.manual_seed(0)
    m = AutocastLayerNorm(16)
    ref = nn.LayerNorm(16)
    ref.load_state_dict(m.state_dict())                         # nn.LayerNorm's parameters and state dict
    assert isinstance(m, nn.LayerNorm) and set(m.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 5, 16)
    assert torch.equal(m(x), ref(x))                            # no autocast: nn.LayerNorm exactly
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        assert y.dtype == torch.bfloat16 and autocast_output_dtype(x) == torch.bfloat16
        lin = nn.Linear(16, 4)
        # what a matmul after it sees: the same bf16 values as with the plain norm's output cast by autocast
        assert torch.equal(lin(y), lin(F.layer_norm(x, (16,), m.weight, m.bias, m.eps).to(torch.bfloat16)))
    assert autocast_output_dtype(torch.zeros(2, dtype=torch.int64)) == torch.int64


def test_norms_compile_without_the_untraceable_autocast_query(monkeypatch):
    """torch.amp.is_autocast_available is a C builtin that Dynamo cannot trace on torch 2.11 (a graph break at
    every norm; fullgraph=True fails): under torch.compile the norms must not call it. Stand-in here: a version
    that raises while compiling."""
    real = torch.amp.is_autocast_available

    def untraceable(device_type):
        if torch.compiler.is_compiling():
            raise RuntimeError("is_autocast_available called while compiling")
        return real(device_type)
    monkeypatch.setattr(torch.amp, "is_autocast_available", untraceable)
    ln, rms = AutocastLayerNorm(16), GatedRMSNorm(16)
    f = lambda x, g: rms(ln(x), g)  # noqa: E731
    x, g = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.compile(f, fullgraph=True, backend="eager")(x, g)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y, f(x, g), rtol=0, atol=0)
    assert autocast_output_dtype(torch.empty(2, device="meta")) == torch.float32  # eager: still asks


def test_gated_rms_norm_returns_the_autocast_dtype():
    norm = GatedRMSNorm(8)
    x, g = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    assert norm(x, g).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x, g)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, norm(x, g).to(torch.bfloat16))


def test_fused_norm_dispatch_is_off_on_cpu_under_compile_and_tracing(monkeypatch):
    x = torch.randn(2, 3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not fused_norm_on(x)                                  # a CPU tensor without the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    try:
        import triton  # noqa: F401
    except ImportError:
        assert not fused_norm_on(x)
        return
    assert fused_norm_on(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_norm_on(x)                              # CPU autocast's dtype rules differ from CUDA's
    traced, compiled = [], []
    torch.jit.trace(lambda t: (traced.append(fused_norm_on(t)), t + 1)[1], (x,), check_trace=False)
    torch.compile(lambda t: (compiled.append(fused_norm_on(t)), t * 2)[1], backend="eager", fullgraph=True)(x)
    assert traced[0] is False and compiled[0] is False


def test_gka_models_use_it_in_their_blocks_and_keep_the_final_norm():
    import timm
    m = timm.create_model("gka_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=2)
    assert isinstance(m.blocks[0].norm1, AutocastLayerNorm) and isinstance(m.blocks[0].norm2, AutocastLayerNorm)
    assert type(m.norm) is nn.LayerNorm              # the features keep nn.LayerNorm's dtype under autocast
    v = timm.create_model("gkavision_tiny", pretrained=False, num_classes=10)
    assert any(isinstance(mod, AutocastLayerNorm) for mod in v.modules())
