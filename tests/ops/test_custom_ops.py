"""The scans as torch.library custom ops: torch.library.opcheck (schema, fake tensors, autograd registration,
AOT dispatch with dynamic shapes), the backward ops, the op nodes seen by tracers, and the Triton backend's ops
under TRITON_INTERPRET=1 (in a subprocess: the interpreter is chosen when the kernels are decorated)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import gka_vision  # noqa: F401  (registers the ops)

OPS = torch.ops.gka_vision


def gka_inputs(B=1, T=9, H=2, D=8, dtype=torch.float64, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    q = F.normalize(r(B, T, H, D), dim=-1)
    k = F.normalize(r(B, T, H, D), dim=-1) * 0.8
    ins = [q, k, r(B, T, H, D), torch.rand(B, T, H, generator=gen, dtype=dtype),
           -F.softplus(r(B, T, H)), -F.softplus(r(B, T, H))]
    return [t.requires_grad_(grad) for t in ins]


def ssm_inputs(b=2, d=4, L=7, n=3, groups=None, dtype=torch.float64, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    bc = (b, n, L) if groups is None else (b, groups, n, L)
    ins = [r(b, d, L), 0.5 * r(b, d, L), -(torch.rand(d, n, generator=gen, dtype=dtype) + 0.2), r(*bc), r(*bc),
           r(d), r(b, d, L), 0.1 * r(d)]
    return [t.requires_grad_(grad) for t in ins]


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_gka_scan(backend, dtype):
    q, k, v, a, g, g2 = gka_inputs(dtype=dtype)
    D = q.shape[-1]
    for reverse, gk in ((False, None), (True, None), (False, g2)):
        torch.library.opcheck(OPS.gka_scan.default, (q, k, v, a, g, gk, 0.02, 5, D ** -0.5, reverse, backend, ""))
    torch.library.opcheck(OPS.gka_scan_bidirectional.default,
                          (q, k, v, a, g, g2, 0.02, 5, D ** -0.5, False, backend, ""))


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_opcheck_gka_backward_op(backend):
    q, k, v, a, g, g2 = gka_inputs(grad=False)
    D = q.shape[-1]
    o, x, fro = OPS.gka_scan_bidirectional(q, k, v, a, g, g2, 0.02, 5, D ** -0.5, False, backend, "")
    torch.library.opcheck(OPS.gka_scan_backward.default,
                          (torch.randn_like(o), q, k, v, a, torch.stack([g, g2]), None, x, fro, 0, 0.02, 5, D ** -0.5,
                           False, backend, ""))


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_selective_scan(backend, dtype):
    u, delta, A, B, C, D, z, bias = ssm_inputs(dtype=dtype)
    op = OPS.selective_scan.default
    torch.library.opcheck(op, (u, delta, A, B, C, D, z, bias, True, False, backend))
    torch.library.opcheck(op, (u, delta, A, B, C, None, None, None, False, True, backend))
    u, delta, A, B, C, D, z, bias = ssm_inputs(d=4, groups=2, dtype=dtype)
    torch.library.opcheck(op, (u, delta, A, B, C, D, None, bias, True, True, backend))


def test_opcheck_selective_scan_backward_op():
    u, delta, A, B, C, D, z, bias = ssm_inputs(grad=False)
    out, s1, s2 = OPS.selective_scan(u, delta, A, B, C, D, z, bias, True, False, "torch")
    torch.library.opcheck(OPS.selective_scan_backward.default,
                          (torch.randn_like(out), u, delta, A, B, C, D, z, bias, s1, s2, True, False, "torch"))


def test_op_gradients_match_autograd_through_the_reference():
    """The registered backward of each op against autograd differentiating the plain reference code (fp64)."""
    from gka_vision.ops.gka_reference import gka_scan_reference
    from gka_vision.ops.selective_scan import selective_scan_reference

    q, k, v, a, g, g2 = gka_inputs(T=11)
    D = q.shape[-1]
    w = torch.randn(q.shape, dtype=torch.float64)
    ref = 0.5 * (gka_scan_reference(q, k, v, a, g) + gka_scan_reference(q, k, v, a, g2, reverse=True))
    for backend in ("reference", "torch"):
        out = OPS.gka_scan_bidirectional(q, k, v, a, g, g2, 0.02, 200, D ** -0.5, False, backend, "")[0]
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
        for got, exp in zip(torch.autograd.grad((out * w).sum(), [q, k, v, a, g, g2]),
                            torch.autograd.grad((ref * w).sum(), [q, k, v, a, g, g2], retain_graph=True)):
            torch.testing.assert_close(got, exp, rtol=1e-8, atol=1e-9)
    ins = ssm_inputs(L=9)
    ref = selective_scan_reference(*ins, delta_softplus=True, reverse=True)
    out = OPS.selective_scan(*ins, True, True, "torch")[0]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(ref.shape, dtype=torch.float64)
    for got, exp in zip(torch.autograd.grad((out * w).sum(), ins), torch.autograd.grad((ref * w).sum(), ins)):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


def test_tracers_see_one_node_per_scan():
    """torch.export and torch.jit.trace record each scan as one op node, not its inner arithmetic."""
    from gka_vision.ops.selective_scan import selective_scan

    class M(torch.nn.Module):
        def forward(self, q, k, v, a, g, g2, u, delta, A, B, C):
            o = gka_vision.ops.gka_scan_bidirectional(q, k, v, a, g, g2, num_iter=3, backend="torch")
            o2 = gka_vision.ops.gka_scan(q, k, v, a, g, num_iter=3, backend="torch")
            return o + o2, selective_scan(u, delta, A, B, C, backend="torch")

    args = [t.detach().float() for t in gka_inputs() + ssm_inputs()[:5]]
    ep = torch.export.export(M(), tuple(args))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("gka_vision.gka_scan_bidirectional" in t for t in targets) == 1, targets
    assert sum("gka_vision.gka_scan." in t for t in targets) == 1, targets
    assert sum("gka_vision.selective_scan." in t for t in targets) == 1, targets
    assert not any("matmul" in t or "bmm" in t or "linalg" in t for t in targets), targets
    kinds = [n.kind() for n in torch.jit.trace(M(), tuple(args)).graph.nodes()]
    assert {"gka_vision::gka_scan", "gka_vision::gka_scan_bidirectional", "gka_vision::selective_scan"} <= set(kinds)
    assert "aten::matmul" not in kinds


_TRITON_SCRIPT = textwrap.dedent(r"""
    import json, torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    import gka_vision
    ops = torch.ops.gka_vision
    gen = torch.Generator().manual_seed(0)
    B, T, H, D = 1, 20, 1, 16
    r = lambda *s: torch.randn(*s, generator=gen)
    q = F.normalize(r(B, T, H, D), dim=-1); k = F.normalize(r(B, T, H, D), dim=-1) * 0.8
    ins = [t.requires_grad_() for t in (q, k, r(B, T, H, D), torch.rand(B, T, H, generator=gen),
                                         -F.softplus(r(B, T, H)), -F.softplus(r(B, T, H)))]
    q, k, v, a, g, g2 = ins
    res = {}
    res["gka_scan"] = torch.library.opcheck(ops.gka_scan.default, (q, k, v, a, g, None, 0.02, 30, D ** -0.5, True,
                                                                   "triton", "chunk=16"))
    res["gka_scan_bidirectional"] = torch.library.opcheck(
        ops.gka_scan_bidirectional.default, (q, k, v, a, g, g2, 0.02, 30, D ** -0.5, True, "triton", ""))
    b, d, L, n = 2, 4, 7, 3
    ss = [t.requires_grad_() for t in (r(b, d, L), 0.5 * r(b, d, L), -(torch.rand(d, n, generator=gen) + 0.2),
                                        r(b, n, L), r(b, n, L), r(d), r(b, d, L), 0.1 * r(d))]
    res["selective_scan"] = torch.library.opcheck(ops.selective_scan.default, (*ss, True, True, "triton"))
    # the forward op's extra outputs are what the kernels' backward takes
    o, x, fro = ops.gka_scan_bidirectional(q, k, v, a, g, g2, 0.02, 30, D ** -0.5, False, "triton", "")
    res["aux_shapes"] = [list(x.shape), list(fro.shape)]
    print(json.dumps(res))
""")


def test_opcheck_triton_ops_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("gka_scan", "gka_scan_bidirectional", "selective_scan"):
        assert set(res[name].values()) == {"SUCCESS"}, (name, res[name])
    assert res["aux_shapes"] == [[2, 1, 20, 1, 16], [2, 1, 20, 1]]
