"""ops/gka_scan.py's eager calls: with the Triton backend in eager mode the public scans run the ops' implementation
through a plain autograd.Function (`_EagerScan`), with the same outputs, gradients and saved tensors as the custom
op; tracing, compiling, dispatch modes and tensor subclasses get the custom op."""
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from interpreted import run_interpreted, tagged_json  # tests/interpreted.py



def _scan_module():
    import gka_vision.ops.gka_scan  # noqa: F401
    return sys.modules['gka_vision.ops.gka_scan']


def _inputs(B=2, T=11, H=2, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
    alpha, gate, gate2 = torch.rand(B, T, H, generator=g), -torch.rand(B, T, H, generator=g), \
        -torch.rand(B, T, H, generator=g)
    return [t.requires_grad_() for t in (q, k, v, alpha, gate, gate2)]


@pytest.mark.parametrize('bidirectional', [False, True])
def test_the_eager_function_equals_the_custom_op(bidirectional):
    """_EagerScan around the torch backend's implementation: the op's values and gradients, bit for bit."""
    m = _scan_module()
    leaves = _inputs()
    q, k, v, a, g, g2 = leaves
    if bidirectional:
        args = (q, k, v, a, g, g2, 0.02, 5, 8 ** -0.5, False, 'torch', '')
        eager, op = m._eager_bi, torch.ops.gka_vision.gka_scan_bidirectional
    else:
        args = (q, k, v, a, g, None, 0.02, 5, 8 ** -0.5, True, 'torch', '')
        eager, op = m._eager_one, torch.ops.gka_vision.gka_scan
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    used = leaves if bidirectional else leaves[:5]
    res = []
    for fn in (eager, op):
        o = fn(*args)
        res.append((o[0].detach(), torch.autograd.grad(o[0], used, do)))
    o = eager(*args)
    assert type(o[0].grad_fn).__name__ == '_EagerScanBackward'
    assert not o[1].requires_grad and not o[2].requires_grad   # x and fro: marked non-differentiable
    (o1, g1), (o2, g2_) = res
    assert torch.equal(o1, o2) and o1.isfinite().all()
    for x, y in zip(g1, g2_):
        assert torch.equal(x, y) and x.isfinite().all()


class _PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_the_eager_call_is_for_the_triton_backend_in_eager_mode_only():
    m = _scan_module()
    x = torch.randn(2, 3)
    assert m._eager_call('triton', x)
    assert not m._eager_call('torch', x) and not m._eager_call('reference', x)
    with _PassThrough():                                         # a dispatch mode (e.g. a checkpoint policy)
        assert not m._eager_call('triton', x)
    assert not m._eager_call('triton', torch.nn.Parameter(x))    # a tensor subclass
    seen = []
    torch.jit.trace(lambda t: (seen.append(m._eager_call('triton', t)), t + 1)[1], (x,), check_trace=False)
    torch.compile(lambda t: (seen.append(m._eager_call('triton', t)), t * 2)[1], backend='eager', fullgraph=True)(x)
    assert seen == [False, False]


_SCRIPT = r"""
import json, sys, torch, torch.utils.checkpoint
from gka_vision.ops import gka_scan, gka_scan_bidirectional
from gka_vision.ops.scan_replay import ScanReplay
m = sys.modules['gka_vision.ops.gka_scan']
g = torch.Generator().manual_seed(0)
B, T, H, D = 1, 20, 1, 16
q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
a, g1, g2 = torch.rand(B, T, H, generator=g), -torch.rand(B, T, H, generator=g), -torch.rand(B, T, H, generator=g)
leaves = [t.requires_grad_() for t in (q, k, v, a, g1, g2)]
do = torch.randn(B, T, H, D, generator=g)
out = {}
for name in ("one", "bi"):
    used = leaves if name == "bi" else leaves[:5]
    def public():
        if name == "bi":
            return gka_scan_bidirectional(*leaves, backend="triton")
        return gka_scan(*leaves[:5], backend="triton")
    def op():
        if name == "bi":
            return torch.ops.gka_vision.gka_scan_bidirectional(*leaves, 0.02, 30, D ** -0.5, False, "triton", "")[0]
        return torch.ops.gka_vision.gka_scan(*leaves[:5], None, 0.02, 30, D ** -0.5, False, "triton", "")[0]
    o1, o2 = public(), op()
    g_1, g_2 = torch.autograd.grad(o1, used, do), torch.autograd.grad(o2, used, do)
    # selective recomputation's replay (ops/scan_replay.py) around the eager call: same gradients
    region = lambda s: (public() * s).sum()
    s = torch.tensor(1.5, requires_grad=True)
    r = torch.utils.checkpoint.checkpoint(region, s, use_reentrant=False, context_fn=lambda: ScanReplay().contexts())
    g_r = torch.autograd.grad(r, used, retain_graph=False)
    g_p = torch.autograd.grad(region(s), used)
    out[name] = dict(grad_fn=type(o1.grad_fn).__name__, equal=bool(torch.equal(o1, o2)),
                     grads_equal=all(bool(torch.equal(x, y)) for x, y in zip(g_1, g_2)),
                     replay_equal=all(bool(torch.allclose(x, y, rtol=1e-6, atol=1e-7)) for x, y in zip(g_r, g_p)),
                     finite=all(bool(t.isfinite().all()) for t in (o1, *g_1, *g_r)))
print("RESULT" + json.dumps(out))
"""


def test_triton_scans_in_the_interpreter_take_the_eager_function_with_the_ops_results():
    pytest.importorskip("triton")
    out = tagged_json(run_interpreted(_SCRIPT), "RESULT")
    for name in ("one", "bi"):
        assert out[name] == dict(grad_fn="_EagerScanBackward", equal=True, grads_equal=True, replay_equal=True,
                                 finite=True), (name, out[name])
