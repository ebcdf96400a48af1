"""The blocks' LayerNorm kernel (gka_kernels.layer_norm) on a GPU against F.layer_norm in float64 (fp32 and bf16
inputs, fp32 and bf16 outputs, the models' widths and an odd one, more row blocks than backward programs), and a
bf16 autocast training step of gka_tiny and gkavision_tiny with the kernel against the same step on PyTorch's
LayerNorm (AutocastLayerNorm's fallback)."""
import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _rel(a, b):
    return (a.double() - b.double()).abs().max().item() / max(a.double().abs().max().item(), 1e-12)


@pytest.mark.parametrize('dtypes', [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                    (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize('shape', [(16, 4096, 192), (8, 196, 320), (4, 49, 640), (3, 77, 7)])
def test_cuda_layer_norm_matches_float64(dtypes, shape):
    from gka_kernels.layer_norm import layer_norm

    in_dtype, out_dtype = dtypes
    torch.manual_seed(0)
    C = shape[-1]
    x = (torch.randn(shape, device='cuda') * 2 + 0.5).to(in_dtype).requires_grad_()
    w = torch.randn(C, device='cuda').requires_grad_()
    b = torch.randn(C, device='cuda').requires_grad_()
    ref = F.layer_norm(x.double(), (C,), w.double(), b.double(), 1e-6)
    y = layer_norm(x, w, b, 1e-6, out_dtype)
    assert y.dtype == out_dtype and y.isfinite().all()
    exact_out = in_dtype == out_dtype == torch.float32
    assert _rel(ref, y) < (1e-5 if exact_out else 8e-3)
    dy = torch.randn(shape, device='cuda')
    g_ref = torch.autograd.grad(ref, [x, w, b], dy.double())
    g = torch.autograd.grad(y, [x, w, b], dy.to(out_dtype))
    assert [t.dtype for t in g] == [in_dtype, torch.float32, torch.float32]
    for name, a, c in zip('xwb', g_ref, g):
        assert c.isfinite().all() and _rel(a, c) < (1e-4 if exact_out else 3e-2), (name, _rel(a, c))


@pytest.mark.parametrize('model', ['gka_tiny_patch16_224', 'gkavision_tiny'])
def test_cuda_models_with_the_kernel_match_pytorch_layer_norm(model, monkeypatch):
    import timm
    import gka_vision.layers.norm as norm

    calls = []
    kernel = norm._kernels().layer_norm
    monkeypatch.setattr(norm._kernels(), 'layer_norm', lambda *a: (calls.append(1), kernel(*a))[1])
    torch.manual_seed(0)
    m = timm.create_model(model, num_classes=10).cuda()
    x = torch.randn(8, 3, 224, 224, device='cuda')
    res = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(norm, 'fused_norm_on', lambda t: False)
        m.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = m(x)
        out.float().square().mean().backward()
        res.append((out.float(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    assert calls, 'the kernel did not run'
    (o1, g1), (o2, g2) = res
    # the same formulas; the norms' reductions round differently in fp32 and the bf16 step passes that on
    assert _rel(o2, o1) < 2e-2
    assert g1.keys() == g2.keys()
    worst = max(_rel(g2[n], g1[n]) for n in g1)
    assert worst < 5e-2, worst
