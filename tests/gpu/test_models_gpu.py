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
