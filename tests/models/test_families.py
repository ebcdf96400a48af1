"""The model families by parameter: one isotropic backbone (GKAViT) and one hybrid backbone (GKAVision), each
taking its token mixer by name with that mixer's own options; the mixer registry; the one recompute switch of
every family; and the state-dict layout that exported weights, checkpoints and optimizer states rely on.
CPU, tiny sizes."""
import hashlib
from functools import partial

import pytest
import timm
import torch
from timm.layers import RmsNorm

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.layers import MIXERS, MixerBlock, VimBlock, create_mixer, mixer_options
from gka_vision.models.gka_vit import GKAViT
from gka_vision.models.gkavision import GKAVision

torch.set_num_threads(1)

# sha256 (first 16 hex digits) of the full-size state_dict's "key shape" lines and the parameter order, as the
# models had them before the families were built by parameter: a change breaks exported weights, training
# checkpoints (their optimizer state follows the parameter order) and must be converted in checkpoint_filter_fn
LAYOUT_DIGESTS = {
    'gka_base_patch16_224': '937b2b1098d7cb65',
    'gka_small_patch16_224': 'e4bae3b4e4013401',
    'gka_tiny_patch16_224': 'ffb959520a2633d0',
    'gkavision_base': '555a8c126f03f76d',
    'gkavision_small': '3f5d2f39aae44cb7',
    'gkavision_tiny': 'bb518f18aa499f09',
    'mamba_vim_base_patch16_224': 'daee848430b6c6b4',
    'mamba_vim_small_patch16_224': 'cc161d3808c5cd30',
    'mamba_vim_tiny_patch16_224': 'c1c3772deff79148',
    'mambavision_tiny': 'ee38abd63263efd7',
}

ISO = dict(img_size=32, patch_size=8, embed_dim=32, depth=2)
HYBRID = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=(4, 4, 4, 4))
# one tiny model per family: (name, create_model kwargs, input side)
TINY = {
    'gka_tiny_patch16_224': (dict(ISO, num_heads=2, num_iter=3, backend='torch'), 32),
    'mamba_vim_tiny_patch16_224': (dict(ISO, d_state=4, backend='torch'), 32),
    'gkavision_tiny': (dict(HYBRID, num_iter=3, backend='torch'), 64),
    'mambavision_tiny': (dict(HYBRID, d_state=4, backend='torch'), 64),
}


def _x(side, b=2):
    return torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(1))


def _create(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs)


def _assert_same_model(a, b, x):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize('name', sorted(LAYOUT_DIGESTS))
def test_state_dict_layout_is_unchanged(name):
    assert name in timm.list_models()
    with torch.device('meta'):
        model = timm.create_model(name)
    text = '\n'.join(f'{k} {tuple(v.shape)}' for k, v in model.state_dict().items())
    text += '\n--\n' + '\n'.join(n for n, _ in model.named_parameters())
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == LAYOUT_DIGESTS[name], \
        f'{name}: state_dict keys, shapes or parameter order changed (convert old weights in checkpoint_filter_fn)'


def test_every_registered_model_is_one_of_the_two_backbones():
    for name in LAYOUT_DIGESTS:
        with torch.device('meta'):
            model = timm.create_model(name)
        assert type(model) is (GKAVision if 'vision' in name else GKAViT), name


def test_the_isotropic_backbone_with_the_vim_block_is_mamba_vim():
    """mamba_vim_* is GKAViT with mixer='mamba_bi', no MLP (VimBlock) and RMSNorm: the same init and output."""
    vim = _create('mamba_vim_tiny_patch16_224', **TINY['mamba_vim_tiny_patch16_224'][0])
    torch.manual_seed(0)
    built = GKAViT(**ISO, mlp_ratio=0., mixer='mamba_bi', norm_layer=partial(RmsNorm, eps=1e-5),
                   mixer_kwargs=dict(d_state=4, expand=2, backend='torch'))
    assert all(isinstance(b, VimBlock) for b in vim.blocks)
    _assert_same_model(built, vim, _x(32))


def test_the_isotropic_backbone_takes_any_registered_mixer():
    """The GKA layout (MixerBlock: mixer + MLP) around another mixer: Mamba, or attention (a ViT)."""
    for mixer, kw in (('mamba_bi', dict(d_state=4, backend='torch')), ('attn', {}), ('gka', dict(num_iter=3))):
        model = _create('gka_tiny_patch16_224', **ISO, num_heads=2, mixer=mixer, mixer_kwargs=kw).eval()
        assert all(isinstance(b, MixerBlock) and isinstance(b.mixer, MIXERS[mixer]) for b in model.blocks)
        with torch.no_grad():
            assert model(_x(32, 1)).shape == (1, 1000)


def test_the_hybrid_backbone_with_the_mamba_mixer_is_mambavision():
    mv = _create('mambavision_tiny', **TINY['mambavision_tiny'][0])
    gv = _create('gkavision_tiny', **HYBRID, mixer='mamba', mixer_kwargs=dict(d_state=4, d_conv=3, expand=1,
                                                                               backend='torch'))
    _assert_same_model(gv, mv, _x(64))


def test_flat_mixer_options_are_the_mixer_kwargs():
    """create_model's flat mixer options (configs, saved model args) build the model that mixer_kwargs builds."""
    flat = _create('gka_tiny_patch16_224', **ISO, num_heads=2, num_iter=3, ridge_ratio=0.05, backend='torch')
    nested = _create('gka_tiny_patch16_224', **ISO, num_heads=2,
                     mixer_kwargs=dict(num_iter=3, ridge_ratio=0.05, backend='torch'))
    assert {(b.mixer.num_iter, b.mixer.ridge_ratio, b.mixer.backend) for b in flat.blocks} == {(3, 0.05, 'torch')}
    _assert_same_model(flat, nested, _x(32))
    with torch.device('meta'):
        hd = timm.create_model('gkavision_tiny', gka_head_dim=40)  # the flat name of GKAVisionMixer's head_dim
        assert {m.head_dim for m in hd.modules() if type(m).__name__ == 'GKAVisionMixer'} == {40}
        # qk_input_dtype: on by default in GKAVisionMixer, off in BidirectionalGKAMixer; both switch flat
        for name, default in (('gkavision_tiny', True), ('gka_tiny_patch16_224', False)):
            for kw in ({}, dict(qk_input_dtype=not default)):
                m = timm.create_model(name, **kw)
                assert {x.qk_input_dtype for x in m.modules() if hasattr(x, 'qk_input_dtype')} == \
                    {kw.get('qk_input_dtype', default)}


def test_a_flat_option_overrides_the_entrypoint_mixer_kwargs():
    with torch.device('meta'):
        vim = timm.create_model('mamba_vim_tiny_patch16_224', d_state=4)
    mixers = [b.mixer for b in vim.blocks]
    assert {(m.d_state, m.d_inner) for m in mixers} == {(4, 2 * 192)}  # d_state given, Vim's expand=2 kept


def test_options_of_another_mixer_are_refused_naming_it():
    with torch.device('meta'):
        with pytest.raises(ValueError, match=r"d_state=4 applies to mixer='mamba' or 'mamba_bi' only, "
                                             r"not mixer='gka'"):
            timm.create_model('gkavision_tiny', d_state=4)
        with pytest.raises(ValueError, match=r"num_iter=3 applies to mixer='gka' or 'gka_bi' only, "
                                             r"not mixer='mamba_bi'"):
            timm.create_model('mamba_vim_tiny_patch16_224', num_iter=3)
        with pytest.raises(TypeError, match=r"mixer 'gka_bi' \(BidirectionalGKAMixer\) has no option 'd_state'; "
                                            r"its options: ridge_ratio, num_iter, backend"):
            timm.create_model('gka_tiny_patch16_224', mixer_kwargs=dict(d_state=4))
        with pytest.raises(TypeError, match='expand'):
            GKAVision(mixer='gka_bi', mixer_kwargs=dict(expand=2))
        with pytest.raises(ValueError, match=r"unknown mixer 'lstm'; choose one of \('gka', 'gka_bi', 'mamba'"):
            timm.create_model('gka_tiny_patch16_224', mixer='lstm')
        with pytest.raises(TypeError):
            timm.create_model('mambavision_tiny', not_a_model_arg=1)


@pytest.mark.parametrize('name', sorted(MIXERS))
def test_every_registered_mixer_maps_tokens_to_tokens(name):
    torch.manual_seed(0)
    kw = {k: v for k, v in dict(backend='torch', num_iter=3, d_state=4).items() if k in mixer_options(name)}
    mixer = create_mixer(name, 32, num_heads=2, **kw)
    assert isinstance(mixer, MIXERS[name])
    x = torch.randn(2, 12, 32, requires_grad=True)
    y = mixer(x, (3, 4))
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in mixer.parameters())


def _saved_bytes(model, x):
    """Bytes autograd saves for the backward in one training forward, in all and inside the blocks' norm + mixer
    (what recomputation avoids keeping)."""
    total, inside, mixing = [0], [0], [False]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        inside[0] += t.numel() * t.element_size() if mixing[0] else 0
        return t

    def enter(*_):
        mixing[0] = True

    def leave(*_):
        mixing[0] = False
    hooks = []
    for b in model.modules():
        if isinstance(b, (MixerBlock, VimBlock)):
            hooks.append((b.norm1 if isinstance(b, MixerBlock) else b.norm).register_forward_pre_hook(enter))
            hooks.append(b.mixer.register_forward_hook(leave))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    for h in hooks:
        h.remove()
    return total[0], inside[0], out


@pytest.mark.parametrize('name', sorted(TINY))
def test_recompute_mixer_does_what_it_says_in_every_family(name):
    """recompute_mixer=True (and set_recompute_mixer) in every family: each mixer block recomputes norm + mixer
    in the backward, so the forward keeps less for the backward, with the same gradients."""
    kwargs, side = TINY[name]
    x = _x(side)
    base = _create(name, **kwargs).train()
    rc = _create(name, recompute_mixer=True, **kwargs).train()
    blocks = [m for m in rc.modules() if isinstance(m, (MixerBlock, VimBlock))]
    assert blocks and all(b.recompute_mixer for b in blocks)
    assert not any(b.recompute_mixer for b in base.modules() if isinstance(b, (MixerBlock, VimBlock)))
    results = []
    for model in (base, rc):
        saved, inside, out = _saved_bytes(model, x)
        out.square().mean().backward()
        results.append((saved, inside, out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (saved0, inside0, out0, g0), (saved1, inside1, out1, g1) = results
    assert inside0 > 0 and inside1 == 0  # nothing kept inside norm + mixer; the checkpoints keep block inputs
    assert saved0 - saved1 > inside0 / 2, (saved0, saved1, inside0)
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=n)
    rc.set_recompute_mixer(False)
    assert not any(b.recompute_mixer for b in blocks)
    assert _saved_bytes(rc, x)[:2] == (saved0, inside0)
    rc.set_recompute_mixer(True)
    assert all(b.recompute_mixer for b in blocks)


def test_recompute_mixer_switches_the_bidirectional_gka_backward_too():
    model = _create('gkavision_tiny', **HYBRID, mixer='gka_bi', num_iter=3, backend='torch')
    mixers = [m for m in model.modules() if type(m).__name__ == 'BidirectionalGKAMixer']
    assert mixers and not any(m.sequential_backward for m in mixers)
    model.set_recompute_mixer(True)
    assert all(m.sequential_backward for m in mixers)


def test_recompute_mixer_raises_where_there_is_no_mixer_block():
    model = _create('mambavision_tiny', **TINY['mambavision_tiny'][0])
    model.prune_intermediate_layers(indices=[1])  # the two conv stages remain
    with pytest.raises(ValueError, match='no token-mixer blocks to recompute'):
        model.set_recompute_mixer(True)
    model.set_recompute_mixer(False)  # nothing to switch off: fine
