"""The mixers' fused per-token kernels on a GPU: against their PyTorch chains run in float64 (fp32 and bf16 inputs,
odd head dims, the models' strided views, forward and gradients), and the GKA mixers with fuse_pointwise on
against off (fp32, and a bf16 autocast step)."""
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _rel(a, b):
    return (a.double() - b.double()).abs().max().item() / max(a.double().abs().max().item(), 1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape', [(4, 197, 3, 64), (3, 49, 4, 40), (2, 33, 5, 7)])
def test_cuda_fused_kernels_match_float64_chains(dtype, shape):
    from gka_kernels.mixer_pointwise import gated_rms_norm, qk_norm_beta
    from gka_vision.layers.mixer_parts import normalize_qk_scale_beta

    torch.manual_seed(0)
    B, N, H, D = shape
    qkv = torch.randn(B, N, 3, H, D, device='cuda').to(dtype).requires_grad_()
    proj = torch.randn(B, N, 2 * H, device='cuda').to(dtype).requires_grad_()
    q, k, v = qkv.unbind(2)
    logit = proj[..., H:]
    exact = normalize_qk_scale_beta(q.double(), k.double(), v.double(), torch.sigmoid(logit.double()).unsqueeze(-1))
    fused = qk_norm_beta(q, k, v, logit, torch.float32)
    gs = [torch.randn(t.shape, device='cuda') for t in exact]
    g_exact = torch.autograd.grad(exact, [qkv, proj], [g.double() for g in gs])
    g_fused = torch.autograd.grad(fused, [qkv, proj], [g.to(t.dtype) for g, t in zip(gs, fused)])
    fwd_tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (8e-3, 3e-2)
    assert [t.dtype for t in fused] == [torch.float32, torch.float32, dtype]
    for a, b in zip(exact, fused):
        assert _rel(a, b) < fwd_tol
    for a, b in zip(g_exact, g_fused):
        assert b.dtype == dtype and b.isfinite().all() and _rel(a, b) < grad_tol

    x = torch.randn(B, N, H, D, device='cuda').to(dtype).requires_grad_()
    gsrc = torch.randn(B, N, H * D + 4, device='cuda').to(dtype).requires_grad_()
    gate = gsrc[..., 4:].view(B, N, H, D)
    w = torch.randn(D, device='cuda').requires_grad_()
    for g in (gate, None):
        xd = x.double()
        yd = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
        if g is not None:
            yd = yd * torch.nn.functional.silu(g.double())
        y = gated_rms_norm(x, w, g, 1e-6)
        assert y.dtype == dtype and _rel(yd, y) < fwd_tol
        dy = torch.randn(y.shape, device='cuda')
        ins = [x, w] + ([gsrc] if g is not None else [])
        for a, b in zip(torch.autograd.grad(yd, ins, dy.double()), torch.autograd.grad(y, ins, dy.to(dtype))):
            assert b.isfinite().all() and _rel(a, b) < grad_tol


@pytest.mark.parametrize('autocast', [False, True])
def test_cuda_gka_mixers_fused_match_unfused(autocast):
    from gka_vision.layers import BidirectionalGKAMixer, GKAVisionMixer

    for make, hw in ((lambda: BidirectionalGKAMixer(192, 3), (14, 14)), (lambda: GKAVisionMixer(320, 8), None)):
        torch.manual_seed(0)
        m = make().cuda()
        x = torch.randn(8, 196, m.dim, device='cuda')
        res = []
        for fuse in (False, True):
            m.fuse_pointwise = fuse
            xi = x.clone().requires_grad_()
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
                o = m(xi, hw)
            res.append((o.float(), torch.autograd.grad(o.float().square().sum(), [xi] + list(m.parameters()))))
        # the two paths round differently (fp32 norms either way) and the solve passes that on: they must agree
        # within the core's accuracy targets against the exact solve (fp32 2e-3 / 1e-2, bf16 1e-2 / 3e-2)
        fwd_tol, grad_tol = (2e-3, 1e-2) if not autocast else (2e-2, 5e-2)
        name = type(m).__name__
        assert res[1][0].dtype == res[0][0].dtype
        assert _rel(res[0][0], res[1][0]) < fwd_tol, name
        for (pname, _), a, b in zip([('x', None)] + list(m.named_parameters()), res[0][1], res[1][1]):
            assert b.isfinite().all() and _rel(a, b) < grad_tol, (name, pname, _rel(a, b))
