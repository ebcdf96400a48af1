"""The selective scan's Triton kernel compiled for the GPU against the PyTorch and float64 references, and the
backend the Mamba models get on a GPU."""
import pytest
import torch

from gka_vision.ops.selective_scan import available_backends, selective_scan, selective_scan_reference

from scan_inputs import selective_scan_inputs  # tests/scan_inputs.py

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_triton_matches_reference_at_model_sizes(reverse):
    """Compiled Triton kernel on the GPU, Vim-S-like sizes (transposed layouts as the mixers pass them)."""
    torch.manual_seed(0)
    b, d, L, n = 4, 768, 197, 16
    dev = "cuda"
    u = torch.randn(b, L, d, device=dev).transpose(1, 2)
    delta = torch.randn(b, L, d, device=dev).transpose(1, 2)
    A = -torch.rand(d, n, device=dev).mul(3).add(0.1)
    Bm, Cm = (torch.randn(b, L, n, device=dev).transpose(1, 2) for _ in range(2))
    D, z, bias = torch.randn(d, device=dev), torch.randn(b, d, L, device=dev), torch.randn(d, device=dev) - 2
    ins = [t.detach().clone().requires_grad_() for t in (u, delta, A, Bm, Cm, D, z, bias)]
    g = torch.randn(b, d, L, device=dev)
    outs, grads = [], []
    for backend in ("torch", "triton") + (("mamba_ssm",) if "mamba_ssm" in available_backends(dev) else ()):
        o = selective_scan(*ins[:5], D=ins[5], z=ins[6], delta_bias=ins[7], delta_softplus=True, reverse=reverse,
                           backend=backend)
        outs.append(o)
        grads.append(torch.autograd.grad(o, ins, g))
    for o, gr in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(o, outs[0], rtol=1e-4, atol=1e-4)
        for a, c in zip(grads[0], gr):
            torch.testing.assert_close(c, a, rtol=1e-3, atol=1e-3 * a.abs().max().item())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("b,d,L,n,block_d", [(2, 6, 7, 5, 4), (1, 3, 1, 2, None), (2, 40, 33, 16, None),
                                             (3, 24, 65, 8, 8)])
def test_cuda_triton_matches_token_loop_reference(b, d, L, n, block_d, reverse):
    """The compiled Triton kernel on the GPU against the token-by-token reference (fp64 on the same inputs):
    forward and every gradient, odd sizes, one and several channel blocks, length 1, both directions."""
    from gka_kernels.selective_scan import selective_scan_triton

    assert available_backends("cuda")[:3] == ["reference", "torch", "triton"]
    x = selective_scan_inputs(b, d, L, n, dtype=torch.float32, seed=3)
    ins = [x[k].cuda().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    g = torch.randn(b, d, L, device="cuda")
    out = selective_scan(*ins[:5], D=ins[5], z=ins[6], delta_bias=ins[7], delta_softplus=True, reverse=reverse,
                         backend="triton")
    grads = torch.autograd.grad(out, ins, g)
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    ref = selective_scan_reference(*ref_ins[:5], D=ref_ins[5], z=ref_ins[6], delta_bias=ref_ins[7],
                                   delta_softplus=True, reverse=reverse)
    ref_grads = torch.autograd.grad(ref, ref_ins, g.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    for name, a, c in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), ref_grads, grads):
        torch.testing.assert_close(c.double(), a, rtol=1e-3, atol=1e-4 * max(a.abs().max().item(), 1.0),
                                   msg=lambda m, name=name: f"grad {name}: {m}")
    # the raw kernel with a forced channel block size, on a transposed (non-contiguous) layout
    u = ins[0].detach().transpose(1, 2).contiguous().transpose(1, 2)
    dt = ins[1].detach().abs()
    y = selective_scan_triton(u, dt, ins[2].detach(), ins[3].detach(), ins[4].detach(), reverse=reverse,
                              block_d=block_d)
    y_ref = selective_scan_reference(u.double(), dt.double(), ins[2].detach().double(), ins[3].detach().double(),
                                     ins[4].detach().double(), reverse=reverse)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4 * y_ref.abs().max().item())


def test_cuda_auto_backend_is_triton_and_bf16_inputs_work():
    """What the models get on a GPU without mamba_ssm: 'auto' resolves to the Triton kernel; bf16 u, B, C
    (autocast) go through it with fp32 state and come back in bf16 close to the fp32 reference."""
    from gka_vision.ops.selective_scan import _mamba_ssm_fn, resolve_backend

    x = selective_scan_inputs(2, 16, 50, 8, dtype=torch.float32, seed=4)
    cu = {k: v.cuda() for k, v in x.items()}
    expected = "mamba_ssm" if _mamba_ssm_fn() is not None else "triton"
    assert resolve_backend("auto", cu["u"], cu["B"], cu["C"]) == expected
    u, B, C = (cu[k].bfloat16().requires_grad_() for k in ("u", "B", "C"))
    delta, A = cu["delta"].requires_grad_(), cu["A"].requires_grad_()
    out = selective_scan(u, delta, A, B, C, D=cu["D"], delta_bias=cu["delta_bias"], delta_softplus=True,
                         backend="triton")
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (u, delta, A, B, C))
    ref = selective_scan_reference(u.detach().double(), delta.detach().double(), A.detach().double(),
                                   B.detach().double(), C.detach().double(), D=cu["D"].double(),
                                   delta_bias=cu["delta_bias"].double(), delta_softplus=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
