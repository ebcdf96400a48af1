"""ops/scan_replay.py: a checkpointed region records its scans' outputs and its recomputation replays them, saving
for the backward what the op itself saves (so the checkpoint's saved-tensor matching holds); a plain op call
outside any region."""
import gc
import sys
import weakref

import pytest
import torch
import torch.utils.checkpoint

from gka_vision.ops import gka_scan
from gka_vision.ops.selective_scan import selective_scan
from gka_vision.ops.scan_replay import ScanReplay

scan_module = sys.modules['gka_vision.ops.gka_scan']


def _context():
    return ScanReplay().contexts()


def _gka_inputs(B=1, T=13, H=2, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
    alpha = torch.rand(B, T, H, generator=g)
    gate = -torch.rand(B, T, H, generator=g)
    return [t.requires_grad_() for t in (q, k, v, alpha, gate)]


def _region(x, inputs, reverse=False):
    q, k, v, alpha, g = inputs
    o = gka_scan(torch.tanh(q) * x, k, v, alpha, g, num_iter=4, reverse=reverse, backend='torch')
    return torch.sin(o).sum()


@pytest.mark.parametrize('reverse', [False, True])
def test_gka_scan_replayed_gives_the_plain_gradients(reverse, monkeypatch):
    inputs = _gka_inputs()
    x = torch.tensor(1.5, requires_grad=True)
    leaves = inputs + [x]
    plain = torch.autograd.grad(_region(x, inputs, reverse), leaves)
    calls, orig = [], scan_module.gka_chunked_forward
    monkeypatch.setattr(scan_module, 'gka_chunked_forward', lambda *a, **k: calls.append(1) or orig(*a, **k))
    out = torch.utils.checkpoint.checkpoint(_region, x, inputs, reverse, use_reentrant=False, context_fn=_context)
    replayed = torch.autograd.grad(out, leaves)
    assert len(calls) == 1  # the forward scanned; the recomputation replayed
    for a, b in zip(replayed, plain):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_selective_scan_replayed_gives_the_plain_gradients():
    g = torch.Generator().manual_seed(1)
    B, Dm, N, L = 2, 6, 3, 11
    u, delta = torch.randn(B, Dm, L, generator=g), torch.rand(B, Dm, L, generator=g)
    A = -torch.rand(Dm, N, generator=g)
    Bm, Cm = torch.randn(B, N, L, generator=g), torch.randn(B, N, L, generator=g)
    D = torch.randn(Dm, generator=g)
    leaves = [t.requires_grad_() for t in (u, delta, A, Bm, Cm, D)]

    def region(u, delta, A, Bm, Cm, D):
        return selective_scan(u * 2, delta, A, Bm, Cm, D, delta_softplus=True, backend='torch').cos().sum()
    plain = torch.autograd.grad(region(*leaves), leaves)
    out = torch.utils.checkpoint.checkpoint(region, *leaves, use_reentrant=False, context_fn=_context)
    for a, b in zip(torch.autograd.grad(out, leaves), plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_a_recomputation_with_more_scans_than_its_forward_fails_clearly():
    inputs = _gka_inputs()
    x = torch.tensor(1.0, requires_grad=True)
    runs = []

    def region(x, inputs):
        runs.append(1)
        out = _region(x, inputs)
        if len(runs) > 1:  # one scan in the forward, two when recomputed
            out = out + gka_scan(*inputs, num_iter=4, backend='torch').sum()
        return out
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):  # else it stops once the first scan is replayed
        out = torch.utils.checkpoint.checkpoint(region, x, inputs, use_reentrant=False, context_fn=_context)
    with pytest.raises(RuntimeError, match='the recomputation called more scans than its forward did'):
        out.backward()


def test_no_region_is_a_plain_call():
    inputs = _gka_inputs()
    out = gka_scan(*inputs, num_iter=4, backend='torch')
    assert out.grad_fn is not None and 'Replay' not in type(out.grad_fn).__name__


def test_kept_outputs_are_freed_with_the_graph_without_the_garbage_collector():
    """Nothing of a region forms a reference cycle: its kept scan outputs go when its graph goes (on a GPU, memory
    that waited for the garbage collector showed up in the next steps' peaks)."""
    refs = []

    def context():
        replay = ScanReplay()
        refs.append(weakref.ref(replay))
        return replay.contexts()
    inputs = _gka_inputs()
    x = torch.tensor(1.0, requires_grad=True)
    gc.disable()
    try:
        out = torch.utils.checkpoint.checkpoint(_region, x, inputs, use_reentrant=False, context_fn=context)
        assert refs[0]() is not None and refs[0]().outputs  # kept for the backward
        out.backward()
        del out
        assert refs[0]() is None
        out = torch.utils.checkpoint.checkpoint(_region, x, inputs, use_reentrant=False, context_fn=context)
        del out  # a forward whose backward never runs
        assert refs[1]() is None
    finally:
        gc.enable()
