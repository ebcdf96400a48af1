"""selective_recompute (layers/blocks.py): every token-mixer block recomputes all but its sequence mixing in the
backward. Same forward and gradients as keeping everything in every family, the scans run once per block while
the other ops run twice, on by default from SELECTIVE_RECOMPUTE_MIN_TOKENS tokens, and its switches."""
import copy
import gc
import sys
import weakref

import pytest
import timm
import torch

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.layers import AttentionMixer, MixerBlock, VimBlock, mixer_parts
from gka_vision.layers.mixer_parts import SELECTIVE_RECOMPUTE_MIN_TOKENS, kept_ops, selective_recompute_on

from gka_vision.ops.scan_replay import ScanReplay

from tiny_models import FAMILIES, REPRESENTATIVE, tiny_model  # tests/tiny_models.py

scan_module = sys.modules['gka_vision.ops.gka_scan']
selective_scan_module = sys.modules['gka_vision.ops.selective_scan']


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, (MixerBlock, VimBlock))]


def _step(model, x):
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class _Calls:
    """Counts calls of the scans' torch-backend forwards and of every block's first Linear / Conv forward."""

    def __init__(self, monkeypatch, model):
        self.scans, self.layers = 0, 0
        for mod, name in ((scan_module, 'gka_chunked_forward'), (selective_scan_module, 'scan_forward')):
            orig = getattr(mod, name)

            def counted(*a, _orig=orig, **k):
                self.scans += 1
                return _orig(*a, **k)
            monkeypatch.setattr(mod, name, counted)
        for blk in _blocks(model):
            layer = next(m for m in blk.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
            layer.register_forward_hook(lambda *a: setattr(self, 'layers', self.layers + 1))


@pytest.mark.parametrize('family', list(FAMILIES))
def test_same_step_scans_once_the_rest_twice(family, monkeypatch):
    name = REPRESENTATIVE[family]
    base, x = tiny_model(family, name)
    sel, _ = tiny_model(family, name)
    sel.set_selective_recompute(True)
    assert all(b.selective_recompute for b in _blocks(sel))
    calls_base, calls_sel = _Calls(monkeypatch, base), _Calls(monkeypatch, sel)
    (o0, g0), (o1, g1) = _step(base, x), _step(sel, x)
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    assert g1.keys() == g0.keys() and g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f'{n}: {m}')
    assert calls_base.scans > 0 and calls_sel.scans == calls_base.scans  # the scans' outputs were kept
    n_blocks = len(_blocks(base))
    assert calls_base.layers == n_blocks and calls_sel.layers == 2 * n_blocks  # the rest ran again


def _gka_vit(img_size, **kwargs):
    torch.manual_seed(0)
    return timm.create_model('gka_tiny_patch16_224', img_size=img_size, patch_size=16, embed_dim=16, depth=1,
                             num_heads=1, num_iter=2, num_classes=2, backend='torch', **kwargs).train()


@pytest.mark.parametrize('img_size,on', [(512, True), (496, False)])  # 32 x 32 = 1024 tokens, 31 x 31 = 961
def test_on_by_default_from_the_token_threshold(img_size, on, monkeypatch):
    assert SELECTIVE_RECOMPUTE_MIN_TOKENS == 1024
    model = _gka_vit(img_size)
    assert model.blocks[0].selective_recompute is None
    calls = _Calls(monkeypatch, model)
    _step(model, torch.randn(1, 3, img_size, img_size))
    assert calls.layers == (2 if on else 1)
    assert calls.scans == 2  # the two scan directions, once


def test_switches_and_errors():
    model = _gka_vit(64, selective_recompute=False)
    blk = model.blocks[0]
    assert blk.selective_recompute is False and blk.mixer.selective_recompute is False
    model.set_selective_recompute(None)
    assert blk.selective_recompute is None and blk.mixer.selective_recompute is None
    model.set_selective_recompute()
    assert blk.selective_recompute is True and blk.mixer.selective_recompute is True
    with pytest.raises(ValueError, match='selective_recompute must be True, False or None'):
        model.set_selective_recompute('yes')
    with pytest.raises(ValueError, match='selective_recompute must be True, False or None'):
        _gka_vit(64, selective_recompute=1)
    assert selective_recompute_on(None, 1024) and not selective_recompute_on(None, 1023)
    assert selective_recompute_on(True, 1) and not selective_recompute_on(False, 10 ** 6)
    gkv = timm.create_model('gkavision_tiny', num_classes=2, selective_recompute=True)
    assert all(b.selective_recompute for b in _blocks(gkv)) and _blocks(gkv)


def test_recompute_mixer_replaces_it(monkeypatch):
    """Both on: the block recomputes norm + mixer with its scans (recompute_mixer), not selectively."""
    model = _gka_vit(64, selective_recompute=True, recompute_mixer=True)
    calls = _Calls(monkeypatch, model)
    _step(model, torch.randn(1, 3, 64, 64))
    assert calls.scans == 4  # both directions, forward and recomputed


def test_kept_ops_are_the_sequence_mixing_ops():
    ops = {str(op) for op in kept_ops()}
    assert {'gka_vision.gka_scan.default', 'gka_vision.gka_scan_bidirectional.default',
            'gka_vision.selective_scan.default', 'aten._scaled_dot_product_flash_attention.default'} <= ops
    assert not any('linear' in o or 'mm' in o or 'conv' in o for o in ops)


def _policy_calls(monkeypatch):
    """Counts the ops that go through the selective checkpoint policy (the dispatch-mode route)."""
    seen = []
    orig = mixer_parts._keep_scans_policy

    def counted(ctx, op, *a, **k):
        seen.append(op)
        return orig(ctx, op, *a, **k)
    monkeypatch.setattr(mixer_parts, '_keep_scans_policy', counted)
    return seen


def test_eager_scan_blocks_replay_their_scans_without_a_dispatch_mode(monkeypatch):
    """In eager mode a GKA / Mamba block keeps its scans' outputs by replaying them (ops/scan_replay.py): no op of
    the block goes through the checkpoint policy; attention blocks (stages 2-3 of gkavision) keep SDPA's output
    through the policy."""
    seen = _policy_calls(monkeypatch)
    model = _gka_vit(64, selective_recompute=True)
    _step(model, torch.randn(1, 3, 64, 64))
    assert seen == []
    gkv = timm.create_model('gkavision_tiny', dim=16, in_dim=8, depths=(1, 1, 2, 2), num_heads=(2, 2, 2, 2),
                            window_size=(8, 8, 4, 2), num_iter=2, num_classes=2, backend='torch',
                            selective_recompute=True).train()
    attention_blocks = [b for b in _blocks(gkv) if isinstance(b.mixer, AttentionMixer)]
    assert attention_blocks and len(attention_blocks) < len(_blocks(gkv))
    _step(gkv, torch.randn(1, 3, 64, 64))
    assert seen  # the attention blocks' ops


@pytest.mark.parametrize('family', list(FAMILIES))
def test_retain_graph_replays_again(family):
    """A graph kept with retain_graph recomputes its blocks once per backward, replaying the same scan outputs."""
    model, x = tiny_model(family, REPRESENTATIVE[family])
    ref = copy.deepcopy(model)
    model.set_selective_recompute(True)
    ref.set_selective_recompute(False)
    for m in (model, ref):
        loss = m(x).square().mean()
        loss.backward(retain_graph=True)
        loss.backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f'{n}: {m}')


@pytest.mark.parametrize('family', list(FAMILIES))
def test_inside_timm_grad_checkpointing(family):
    """Selective regions nested in timm's checkpointed stages/blocks: same gradients as neither."""
    model, x = tiny_model(family, REPRESENTATIVE[family])
    ref = copy.deepcopy(model)
    model.set_selective_recompute(True)
    model.set_grad_checkpointing(True)
    ref.set_selective_recompute(False)
    (o0, g0), (o1, g1) = _step(ref, x), _step(model, x)
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f'{n}: {m}')


def test_a_step_leaves_no_kept_scan_outputs_behind(monkeypatch):
    """After the backward every region's kept scan outputs are freed by reference counting alone (no cycles
    waiting for the garbage collector, whose memory would add to the next steps' peaks)."""
    refs = []

    class Tracked(ScanReplay):
        def __init__(self):
            super().__init__()
            refs.append(weakref.ref(self))
    monkeypatch.setattr(mixer_parts, 'ScanReplay', Tracked)
    model = _gka_vit(64, selective_recompute=True)
    gc.disable()
    try:
        _step(model, torch.randn(1, 3, 64, 64))
        assert refs and all(r() is None for r in refs)
    finally:
        gc.enable()
