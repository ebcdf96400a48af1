"""Triton selective scan vs the PyTorch reference under TRITON_INTERPRET=1 (tiny fp32 cases).

The interpreter is chosen when kernels are decorated, so the check runs in a fresh subprocess and never
forces interpreter mode on other tests.
"""
import textwrap

import pytest

from interpreted import run_interpreted, tagged_json  # tests/interpreted.py

pytest.importorskip("triton")

_SCRIPT = textwrap.dedent(r"""
    import json, torch
    from gka_vision.ops.selective_scan import selective_scan
    from gka_kernels.selective_scan import selective_scan_triton
    torch.manual_seed(0)
    results = []
    # (batch, channels, length, d_state, block_d): several channel blocks, odd d_state, length 1
    cases = [(2, 6, 7, 5, 4), (1, 3, 1, 2, None), (2, 9, 12, 8, 8)]
    for (b, d, L, n, block_d) in cases:
        for reverse in (False, True):
            u = torch.randn(b, d, L); delta = 0.5 * torch.randn(b, d, L); A = -(torch.rand(d, n) + 0.2)
            B = torch.randn(b, n, L); C = torch.randn(b, n, L); D = torch.randn(d)
            z = torch.randn(b, d, L); bias = 0.1 * torch.randn(d)
            ins = [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
            g = torch.randn(b, d, L)
            outs, grads = [], []
            for backend in ("reference", "triton"):
                o = selective_scan(*ins[:5], D=ins[5], z=ins[6], delta_bias=ins[7], delta_softplus=True,
                                   reverse=reverse, backend=backend)
                outs.append(o)
                grads.append(torch.autograd.grad(o, ins, g))
            # the raw kernel on a non-contiguous (transposed) layout, with block_d forcing several blocks
            uT = u.detach().transpose(1, 2).contiguous().transpose(1, 2)
            y_raw = selective_scan_triton(uT, delta.detach().abs(), A.detach(), B.detach(), C.detach(),
                                          reverse=reverse, block_d=block_d)
            y_ref = selective_scan(u.detach(), delta.detach().abs(), A.detach(), B.detach(), C.detach(),
                                   reverse=reverse, backend="reference")
            scale = lambda t: max(t.abs().max().item(), 1e-6)
            results.append(dict(
                case=[b, d, L, n, block_d, reverse],
                fwd=(outs[0] - outs[1]).abs().max().item() / scale(outs[0]),
                raw=(y_raw - y_ref).abs().max().item() / scale(y_ref),
                grads=[(a - c).abs().max().item() / scale(a) for a, c in zip(*grads)],
            ))
    # bf16 u, B, C (what autocast feeds the kernel): same fp32 math on the same rounded values
    torch.manual_seed(2)
    u, B, C = (torch.randn(2, 5, 6).bfloat16(), torch.randn(2, 3, 6).bfloat16(), torch.randn(2, 3, 6).bfloat16())
    delta, A = torch.rand(2, 5, 6), -(torch.rand(5, 3) + 0.2)
    ins = [t.requires_grad_() for t in (u, delta, A, B, C)]
    outs, grads = [], []
    for backend in ("reference", "triton"):
        o = selective_scan(*ins, backend=backend)
        outs.append(o.float())
        grads.append(torch.autograd.grad(o.float().square().sum(), ins))
    bf16 = dict(dtype=str(outs[1].dtype), out_dtype=str(o.dtype),
                fwd=(outs[0] - outs[1]).abs().max().item() / outs[0].abs().max().item(),
                grads=[(a.float() - c.float()).abs().max().item() / a.float().abs().max().item()
                       for a, c in zip(*grads)], grad_dtypes=[str(g.dtype) for g in grads[1]])
    print("BF16" + json.dumps(bf16))
    # whole mixers (the layouts the models pass: transposed views of projections), forward and gradients
    from gka_vision.layers.mamba_mixer import BidirectionalMambaMixer, MambaVisionMixer
    mixers = []
    for cls in (BidirectionalMambaMixer, MambaVisionMixer):
        torch.manual_seed(1)
        m = cls(12, d_state=4)
        x = torch.randn(2, 9, 12)
        outs, grads = [], []
        for backend in ("torch", "triton"):
            m.backend = backend
            xi = x.clone().requires_grad_()
            o = m(xi)
            g = torch.autograd.grad(o.square().sum(), [xi] + list(m.parameters()))
            outs.append(o)
            grads.append(g)
        scale = lambda t: max(t.abs().max().item(), 1e-6)
        mixers.append(dict(name=cls.__name__, fwd=(outs[0] - outs[1]).abs().max().item() / scale(outs[0]),
                           grads=[(a - c).abs().max().item() / scale(a) for a, c in zip(*grads)]))
    print("RESULT" + json.dumps(results))
    print("MIXERS" + json.dumps(mixers))
""")


def test_triton_matches_reference_in_interpreter():
    stdout = run_interpreted(_SCRIPT)
    results = tagged_json(stdout, "RESULT")
    assert len(results) == 6
    mixers = tagged_json(stdout, "MIXERS")
    assert [m["name"] for m in mixers] == ["BidirectionalMambaMixer", "MambaVisionMixer"]
    for m in mixers:
        assert m["fwd"] < 1e-5 and max(m["grads"]) < 1e-4, m
    bf16 = tagged_json(stdout, "BF16")
    assert bf16["out_dtype"] == "torch.bfloat16" and bf16["fwd"] < 1e-2, bf16
    assert bf16["grad_dtypes"] == ["torch.bfloat16", "torch.float32", "torch.float32", "torch.bfloat16",
                                   "torch.bfloat16"] and max(bf16["grads"]) < 2e-2, bf16
    for r in results:
        assert r["fwd"] < 1e-5, r
        assert r["raw"] < 1e-5, r
        assert max(r["grads"]) < 1e-4, r
