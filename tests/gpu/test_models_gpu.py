"""The model families on a GPU: a bf16 training step with the auto backends (Triton scans), the Mamba baselines'
logits equal to their PyTorch-scan logits, and the Mamba mixers' Triton scan against the PyTorch scan."""
import pytest
import timm
import torch

import gka_vision  # noqa: F401  (registers the models)

from timm_api import check_cuda_train_step  # tests/timm_api.py

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GKA_MODELS = timm.list_models(module='gka_vit')


@pytest.mark.parametrize('name', GKA_MODELS + ['gkavision_tiny'])
def test_cuda_auto_backend(name):
    check_cuda_train_step(name)


@pytest.mark.parametrize('name', ['mamba_vim_tiny_patch16_224', 'mambavision_tiny'])
def test_cuda_mamba_auto_backend_matches_torch_scan(name):
    model, x = check_cuda_train_step(name)
    # the same weights through the PyTorch scan give the same logits (fp32, eval)
    model.eval()
    with torch.no_grad():
        auto = model(x)
        for m in model.modules():
            if hasattr(m, 'backend'):
                m.backend = 'torch'
        torch.testing.assert_close(model(x), auto, rtol=1e-3, atol=1e-3)


def test_cuda_mixers_triton_scan_matches_torch_scan_forward_and_backward():
    """Both Mamba mixers on the GPU with the Triton selective scan against the PyTorch scan: same output and
    same gradients of the input and of every parameter (fp32, the layouts the models pass)."""
    from gka_vision.layers.mamba_mixer import BidirectionalMambaMixer, MambaVisionMixer

    for cls in (BidirectionalMambaMixer, MambaVisionMixer):
        torch.manual_seed(0)
        mixer = cls(64, d_state=8).cuda()
        x = torch.randn(2, 49, 64, device='cuda')
        outs, grads = [], []
        for backend in ('torch', 'triton'):
            mixer.backend = backend
            xi = x.clone().requires_grad_()
            out = mixer(xi)
            outs.append(out)
            grads.append(torch.autograd.grad(out.square().sum(), [xi] + list(mixer.parameters())))
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4, msg=lambda m: f'{cls.__name__}: {m}')
        for a, c in zip(*grads):
            torch.testing.assert_close(c, a, rtol=1e-3, atol=1e-4 * max(a.abs().max().item(), 1.0),
                                       msg=lambda m: f'{cls.__name__} grad: {m}')


@pytest.mark.parametrize('compiled', [False, True])
def test_cuda_selective_recompute_same_step_less_memory(compiled):
    """gka_tiny at 512 px (1024 tokens: selective recomputation on by default) on the Triton scans, bf16 autocast:
    the same logits and gradients as with every activation kept (selective_recompute=False), eager and compiled,
    with less than half the memory held after the forward. Eager runs the same kernels in the same order (equal
    logits); compiled, Inductor fuses the two graphs differently (bf16 rounding apart)."""
    for dtype in (torch.float32, torch.bfloat16):  # cuBLAS allocates its workspace at its first matmul: before
        torch.ones(64, 64, device='cuda', dtype=dtype) @ torch.ones(64, 64, device='cuda', dtype=dtype)
    results = {}
    for setting in (None, False):
        torch.manual_seed(0)
        model = timm.create_model('gka_tiny_patch16_224', img_size=512, num_classes=10, depth=4,
                                  selective_recompute=setting).cuda().train()
        fn = torch.compile(model) if compiled else model
        x = torch.randn(2, 3, 512, 512, device='cuda')
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = fn(x)
        held = torch.cuda.memory_allocated() - base
        out.float().square().mean().backward()
        results[setting] = (out.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}, held)
    (o1, g1, held_sel), (o0, g0, held_all) = results[None], results[False]
    assert torch.isfinite(o1).all()
    tol = 2e-2 if compiled else 0.
    torch.testing.assert_close(o1, o0, rtol=tol, atol=tol * o0.abs().max().item())
    scale = max(g.abs().max().item() for g in g0.values())
    gtol = 3e-2 if compiled else 1e-3
    for n, g in g0.items():
        torch.testing.assert_close(g1[n], g, rtol=gtol, atol=gtol * 0.1 * scale, msg=lambda m, n=n: f'{n}: {m}')
    assert held_sel < 0.5 * held_all, (held_sel, held_all)
