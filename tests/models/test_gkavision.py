"""The hierarchical hybrid family (gkavision.py, mambavision.py) through the timm API; CPU, tiny configs.

mambavision_tiny and gkavision_* share one backbone (GKAVision, parametrised by the mixer), so every API test
runs on both. Full sizes are only built on the meta device. TINY keeps head dims of 40 in stages 2-3 (not a
power of two) and windows smaller than the map at 96 px (padding path); MIXER_TINY adds each mixer's own
tiny options (a mixer refuses the options of another).
"""
import pytest
import torch
import timm
import timm.optim
from safetensors.torch import save_file

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.models.gkavision import HybridStage, window_partition, window_reverse

from timm_api import (check_bf16_autocast_step, check_default_cfg_and_head,  # tests/timm_api.py
                      check_grad_checkpointing_identical, check_grads, check_intermediates_match_features,
                      check_param_count, create, images, load, meta_model)

torch.set_num_threads(1)

MODELS = timm.list_models(module='mambavision') + timm.list_models(module='gkavision')
TINY = dict(dim=20, in_dim=8, depths=(1, 1, 2, 2), num_heads=(2, 2, 2, 4), window_size=(8, 8, 4, 2))
MIXER_TINY = {'mamba': dict(d_state=4, backend='torch'), 'gka': dict(num_iter=4, backend='torch'),
              'gka_bi': dict(num_iter=4, backend='torch')}
WIDTHS = [20, 40, 80, 160]


def _tiny(name, kwargs):
    """TINY with the tiny options of the model's mixer (its default, or kwargs['mixer'])."""
    mixer = kwargs.get('mixer', 'mamba' if name.startswith('mambavision') else 'gka')
    return dict(TINY, **MIXER_TINY.get(mixer, {}))


def _create(name, seed=0, **kwargs):
    return create(name, _tiny(name, kwargs), seed, **kwargs)


def _load(name, path, seed=0, **kwargs):
    return load(name, path, _tiny(name, kwargs), seed, **kwargs)


_x = images


def test_registered():
    assert {'mambavision_tiny', 'gkavision_tiny', 'gkavision_small', 'gkavision_base'} <= set(MODELS)


def test_mambavision_tiny_size():
    model = meta_model('mambavision_tiny')
    check_param_count(model, 31.8e6, 'mambavision_tiny (MambaVision-T has 31.8M)')
    assert [len(s.blocks) for s in model.stages] == [1, 3, 8, 4]
    assert model.feature_info[-1]['num_chs'] == model.num_features == 640


@pytest.mark.parametrize('name,widths,scan_head_dim,head_dim', [
    ('gkavision_tiny', [80, 160, 320, 640], 32, 40),
    ('gkavision_small', [96, 192, 384, 768], 32, 48),
    ('gkavision_base', [128, 256, 512, 1024], 64, 64),
])
def test_gkavision_sizes_use_gka_mixers(name, widths, scan_head_dim, head_dim):
    """GKAVisionMixer: power-of-two scan heads; the bidirectional mixer keeps C / num_heads."""
    model = meta_model(name)
    assert [f['num_chs'] for f in model.feature_info] == widths
    mixers = [m for m in model.modules() if type(m).__name__ == 'GKAVisionMixer']
    assert mixers and all(m.head_dim == scan_head_dim for m in mixers)
    assert not any(type(m).__name__ in ('MambaVisionMixer', 'BidirectionalGKAMixer') for m in model.modules())
    bi = meta_model(name, mixer='gka_bi')
    mixers = [m for m in bi.modules() if type(m).__name__ == 'BidirectionalGKAMixer']
    assert mixers and all(m.head_dim == head_dim for m in mixers)


def test_gkavision_tiny_has_mambavision_tiny_size():
    """The paper's GKAVision-T is a drop-in mixer swap at MambaVision-T's ~31.8M parameters: the MambaVision-shaped
    GKA mixer stays within 2 % of it (the bidirectional full-width mixer is 12 % larger)."""
    mv = sum(p.numel() for p in meta_model('mambavision_tiny').parameters())
    gv = sum(p.numel() for p in meta_model('gkavision_tiny').parameters())
    bi = sum(p.numel() for p in meta_model('gkavision_tiny', mixer='gka_bi').parameters())
    assert abs(gv / mv - 1) < 0.02, (gv, mv)
    assert bi / mv > 1.1, (bi, mv)


def _scan_heads(name, **kwargs):
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs)
    return [(m.num_heads, m.head_dim) for m in model.modules() if type(m).__name__ == 'GKAVisionMixer']


def test_scan_head_dims_are_powers_of_two_by_default():
    """tiny and small: 32 (their C / num_heads, 40 and 48, are padded to 64 in the kernels); base: C / num_heads."""
    assert _scan_heads('gkavision_tiny') == [(5, 32)] * 4 + [(10, 32)] * 2
    assert _scan_heads('gkavision_small') == [(6, 32)] * 4 + [(12, 32)] * 3
    assert _scan_heads('gkavision_base') == [(4, 64)] * 5 + [(8, 64)] * 3
    # the default applies to the GKA mixer only
    assert _scan_heads('gkavision_tiny', mixer='gka_bi') == [] and _scan_heads('mambavision_tiny') == []


def test_gka_head_dim_kwarg():
    assert _scan_heads('gkavision_tiny', gka_head_dim=40) == [(4, 40)] * 4 + [(8, 40)] * 2  # C / num_heads
    assert _scan_heads('gkavision_tiny', gka_head_dim=16) == [(10, 16)] * 4 + [(20, 16)] * 2
    assert _scan_heads('gkavision_tiny', mixer_kwargs=dict(head_dim=40)) == [(4, 40)] * 4 + [(8, 40)] * 2
    with pytest.raises(ValueError, match="gka_head_dim=32 applies to mixer='gka' only"):
        meta_model('mambavision_tiny', gka_head_dim=32)


def test_weights_with_other_scan_heads_name_the_head_dim_that_loads_them():
    """Weights of gkavision_tiny with its earlier scan heads (C / num_heads = 40) into today's default (32)."""
    from gka_vision.models.gkavision import checkpoint_filter_fn
    with torch.device('meta'):
        old, new = timm.create_model('gkavision_tiny', gka_head_dim=40), timm.create_model('gkavision_tiny')
    wrapped = {'state_dict': {'module.' + k: v for k, v in old.state_dict().items()}}
    with pytest.raises(ValueError, match=r"has shape .* 4 scan heads of 40 .* model with gka_head_dim=40"):
        checkpoint_filter_fn(wrapped, new)
    assert set(checkpoint_filter_fn(old.state_dict(), old)) == set(old.state_dict())


def test_unknown_mixer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown mixer 'gka2'.*gka_bi"):
        _create('gkavision_tiny', mixer='gka2')


def test_gkavision_tiny_is_mambavision_tiny_with_another_mixer():
    mv, gv = meta_model('mambavision_tiny').state_dict(), meta_model('gkavision_tiny').state_dict()
    non_mixer = lambda sd: {k: tuple(v.shape) for k, v in sd.items() if '.mixer.' not in k}  # noqa: E731
    assert non_mixer(mv) == non_mixer(gv)
    assert {k.split('.mixer.')[0] for k in mv if '.mixer.' in k} == {k.split('.mixer.')[0] for k in gv if '.mixer.' in k}


@pytest.mark.parametrize('name,kwargs', [('mambavision_tiny', {}), ('gkavision_tiny', {}),
                                         ('gkavision_tiny', dict(mixer='gka_bi'))])
def test_zero_padded_windows_keep_gradients_bounded(name, kwargs):
    """At 96 px stage 2's 6x6 map is padded with zero tokens to two 4x4 windows. Zero tokens gave the
    GKA mixer's q = k = 0, where the L2 normalisation's gradient is 1e6: max |grad| was 3.8e4 here (1e35 for
    gkavision_tiny at 384 px, NaN in bf16 on the H200) before conv1d_x got a bias; 0.5 after."""
    model = _create(name, **kwargs).train()
    torch.nn.functional.cross_entropy(model(_x(2, 96, 96)), torch.tensor([1, 2])).backward()
    worst = max(p.grad.abs().max().item() for p in model.parameters())
    assert worst < 10, worst


@pytest.mark.parametrize('name', ['mambavision_tiny', 'gkavision_tiny'])
def test_single_token_windows_still_give_every_parameter_a_gradient(name):
    """At 32 px stage 3 is 1x1 (sequence length 1): DDP needs a gradient for every parameter anyway."""
    model = _create(name, num_classes=5).train()
    model(_x(2, 32, 32)).mean().backward()
    check_grads(model)


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_and_head(name):
    check_default_cfg_and_head(_create(name), 'NCHW', (7, 7))
    with torch.no_grad():
        assert _create(name, num_classes=0, global_pool='')(_x()).shape == (2, 160, 2, 2)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = _create(name, features_only=True).eval()
    assert model.feature_info.channels() == WIDTHS
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(_x(2, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // r, 96 // r) for c, r in zip(WIDTHS, [4, 8, 16, 32])]
    assert all(torch.isfinite(f).all() for f in feats)
    model = _create(name, features_only=True, out_indices=(1, 2))
    with torch.no_grad():
        assert [f.shape[1] for f in model(_x())] == [40, 80]


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    model = _create(name)
    x = _x()
    shapes = [(2, c, 64 // r, 64 // r) for c, r in zip(WIDTHS, [4, 8, 16, 32])]
    feat, _ = check_intermediates_match_features(model, x, shapes, early=1)
    with torch.no_grad():
        last = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(last[0], feat)
    taken = model.prune_intermediate_layers(indices=[0, 2])
    assert taken == [0, 2] and len(model.stages) == 3 and model.num_classes == 0


@pytest.mark.parametrize('name', ['mambavision_tiny', 'gkavision_tiny'])
def test_grad_checkpointing_identical(name):
    check_grad_checkpointing_identical(lambda: _create(name), _x(), grad_atol=1e-6)


def test_window_partition_roundtrip_and_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    t = window_partition(x, 2, 3)
    assert t.shape == (2 * 2 * 2, 6, 3)
    torch.testing.assert_close(t[0, :, 0], x[0, 0, :2, :3].flatten())  # raster order inside a window
    torch.testing.assert_close(window_reverse(t, 2, 3, 4, 6), x)


@pytest.mark.parametrize('mixer', ['mamba', 'gka'])
def test_windows_do_not_mix(mixer):
    """Inside a stage every block works per window: changing one window leaves the others unchanged,
    also when the map (6x6) is padded up to whole windows (4x4)."""
    torch.manual_seed(0)
    stage = HybridStage(40, 40, 2, num_heads=1, window_size=4, mixer=mixer, mixer_kwargs=MIXER_TINY[mixer]).eval()
    x = torch.randn(1, 40, 6, 6)
    x2 = x.clone()
    x2[:, :, 4:, 4:] += 1.0  # the bottom-right (padded) window
    with torch.no_grad():
        y, y2 = stage(x), stage(x2)
    assert y.shape == (1, 40, 6, 6)
    torch.testing.assert_close(y[:, :, :4], y2[:, :, :4])
    torch.testing.assert_close(y[:, :, :, :4], y2[:, :, :, :4])
    assert (y[:, :, 4:, 4:] - y2[:, :, 4:, 4:]).abs().max() > 1e-3


@pytest.mark.parametrize('name', ['mambavision_tiny', 'gkavision_tiny'])
def test_save_then_load_pretrained(name, tmp_path):
    model = _create(name, seed=3).eval()
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    ckpt = tmp_path / 'ckpt.pth'
    torch.save({'model': {'module.' + k: v for k, v in model.state_dict().items()}, 'epoch': 3}, ckpt)
    x = _x()
    with torch.no_grad():
        for p in (path, ckpt):
            torch.testing.assert_close(_load(name, p, seed=4).eval()(x), model(x), rtol=0, atol=0)
        five = _load(name, path, num_classes=5).eval()
        assert five.head.weight.shape == (5, 160)
        torch.testing.assert_close(five.forward_features(x), model.forward_features(x), rtol=0, atol=0)
        gray = _load(name, path, in_chans=1).eval()
        torch.testing.assert_close(gray.stem[0].weight, model.stem[0].weight.sum(1, keepdim=True))
    bad = dict(model.state_dict(), **{'stages.2.blocks.0.mlp.fc1.weight': torch.zeros(3, 3)})
    torch.save(bad, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r"stages\.2\.blocks\.0\.mlp\.fc1\.weight.*\(3, 3\)"):
        _load(name, tmp_path / 'bad.pth')


@pytest.mark.parametrize('name', ['mambavision_tiny', 'gkavision_tiny'])
def test_other_resolutions_and_bad_inputs(name):
    model = _create(name).eval()
    with torch.no_grad():
        assert model.forward_features(_x(1, 96, 96)).shape == (1, 160, 3, 3)   # padded windows
        assert model(_x(1, 70, 50)).shape == (1, 1000)                          # not a multiple of 32
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        model(_x(c=1))
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(10, 'max')
    with pytest.raises(ValueError, match='unknown mixer'):
        _create(name, mixer='lstm')


@pytest.mark.parametrize('name', ['mambavision_tiny', 'gkavision_tiny'])
def test_bf16_autocast_and_param_groups(name):
    model = _create(name, num_classes=10)
    check_bf16_autocast_step(model, _x())
    skip = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert skip and skip <= params.keys()
    assert all(('A_log' in n or n.endswith('.D') or 'dt_bias' in n) for n in skip)
    opt = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(params[n]) in no_decay for n in skip)
    groups = timm.models.group_parameters(model, model.group_matcher())
    # stem, one group per block (a downsample joins its stage's first block, as in timm's convnext), head
    assert len(groups) == 1 + sum(TINY['depths']) + 1
    assert any('stages.1.downsample.weight' in g and 'stages.1.blocks.0.conv1.weight' in g for g in groups.values())
