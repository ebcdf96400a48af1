"""The blocks' LayerNorm kernel (gka_kernels.layer_norm) on a GPU against F.layer_norm in float64 (fp32 and bf16
inputs, fp32 and bf16 outputs, the models' widths and an odd one, more row blocks than backward programs), and
bf16 autocast training steps of gka_tiny and gkavision_tiny with the kernel and with PyTorch's LayerNorm
(AutocastLayerNorm's fallback), each against the fp32 step."""
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


def _flat(grads):
    return torch.cat([g.double().flatten() for g in grads.values()])


@pytest.mark.parametrize('model', ['gka_tiny_patch16_224', 'gkavision_tiny'])
def test_cuda_models_with_the_kernel_match_pytorch_layer_norm(model, monkeypatch):
    """A bf16 autocast step with the kernel is as close to the fp32 step (no autocast) as the same bf16 step on
    PyTorch's LayerNorm: both round differently from fp32 in many places, so each is compared with the fp32 step
    (relative L2 over the output and over all gradients together), and the kernel's error must not be larger than
    PyTorch's by more than a margin."""
    import timm
    import gka_vision.layers.norm as norm

    calls = []
    kernel = norm._kernels().layer_norm
    monkeypatch.setattr(norm._kernels(), 'layer_norm', lambda *a: (calls.append(1), kernel(*a))[1])
    torch.manual_seed(0)
    m = timm.create_model(model, num_classes=10).cuda()
    for mod in m.modules():
        if isinstance(mod, norm.AutocastLayerNorm):
            mod.fused_min_numel = 0  # the kernel also at this small batch
    x = torch.randn(8, 3, 224, 224, device='cuda')

    def step(autocast, fused):
        monkeypatch.setattr(norm, 'fused_norm_on', (lambda t: False) if not fused else fused_norm_on)
        m.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
            out = m(x)
        out.float().square().mean().backward()
        return out.double(), _flat({n: p.grad for n, p in m.named_parameters() if p.grad is not None})

    fused_norm_on = norm.fused_norm_on
    o_ref, g_ref = step(autocast=False, fused=False)
    n_before = len(calls)
    o_k, g_k = step(autocast=True, fused=True)
    assert len(calls) > n_before, 'the kernel did not run'
    o_t, g_t = step(autocast=True, fused=False)
    assert g_k.shape == g_t.shape == g_ref.shape
    for a in (o_k, g_k, o_t, g_t):
        assert a.isfinite().all()

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    err_out_k, err_out_t = rel(o_k, o_ref), rel(o_t, o_ref)
    err_k, err_t = rel(g_k, g_ref), rel(g_t, g_ref)
    assert err_out_k < 5e-2 and err_k < 1e-1, (err_out_k, err_k)
    assert err_out_k <= 1.5 * err_out_t + 2e-3, (err_out_k, err_out_t)
    assert err_k <= 1.5 * err_t + 5e-3, (err_k, err_t)
