"""The isotropic GKA backbones (module gka_vit) through the timm API, on CPU with tiny configs.

Every registered gka_vit model is built once at full size (on the meta device) to check its parameter
count; all other tests override the sizes with TINY so that CPU runs take seconds.
"""

import pytest
import torch
import timm
import timm.optim
from safetensors.torch import save_file

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.models.gka_vit import checkpoint_filter_fn

from timm_api import (check_bf16_autocast_step, check_default_cfg_and_head,  # tests/timm_api.py
                      check_grad_checkpointing_identical, check_intermediates_match_features,
                      check_load_adapts_head_and_size, check_param_count, create, images, load, meta_model)

MODELS = timm.list_models(module='gka_vit')
TINY = dict(img_size=64, embed_dim=64, depth=3, num_heads=2, num_iter=4, backend='torch')
PARAM_TARGETS = {  # Vim-Ti / S / B
    'gka_tiny_patch16_224': 7e6,
    'gka_small_patch16_224': 26e6,
    'gka_base_patch16_224': 98e6,
}


def _create(name, seed=0, **kwargs):
    return create(name, TINY, seed, **kwargs)


def _load(name, path, seed=0, **kwargs):
    return load(name, path, TINY, seed, **kwargs)


_x = images


def test_all_sizes_registered():
    assert set(PARAM_TARGETS) <= set(MODELS)


@pytest.mark.parametrize('name', MODELS)
def test_param_count_within_10_percent(name):
    check_param_count(meta_model(name), PARAM_TARGETS[name], name)


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_and_head(name):
    check_default_cfg_and_head(_create(name), 'NHWC', (14, 14))

    unpooled = _create(name, num_classes=0, global_pool='')
    with torch.no_grad():
        assert unpooled(_x()).shape == (2, 4, 4, 64)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = _create(name, features_only=True)
    model.eval()
    assert model.feature_info.channels() == [64] * 3
    assert model.feature_info.reduction() == [16] * 3
    with torch.no_grad():
        feats = model(_x(2, 64, 96))
    assert len(feats) == 3
    for f in feats:
        assert f.shape == (2, 64, 4, 6) and torch.isfinite(f).all()

    model = _create(name, features_only=True, out_indices=(0, 2))
    with torch.no_grad():
        assert [f.shape[1] for f in model(_x())] == [64, 64]
    assert len(model.model.blocks) == 3  # pruned after the last requested block


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    model = _create(name)
    x = _x()
    check_intermediates_match_features(model, x, [(2, 64, 4, 4)] * 3, early=0)
    assert len(model.feature_info) == 3
    with torch.no_grad():
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt='NHWC', norm=True, intermediates_only=True)
        assert len(nhwc) == 1 and nhwc[0].shape == (2, 4, 4, 64)

    taken = model.prune_intermediate_layers(indices=2)
    assert taken == [1, 2] and model.num_classes == 0


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing_identical(name):
    check_grad_checkpointing_identical(lambda: _create(name), _x(), grad_atol=1e-7)


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('fmt', ['safetensors', 'pth', 'pth_wrapped'])
def test_save_then_load_pretrained(name, fmt, tmp_path):
    model = _create(name, seed=3).eval()
    sd = model.state_dict()
    if fmt == 'safetensors':
        path = tmp_path / 'w.safetensors'
        save_file(sd, str(path))
    elif fmt == 'pth':
        path = tmp_path / 'w.pth'
        torch.save(sd, path)
    else:  # a training checkpoint: DDP prefixes inside a 'model' entry, next to plain metadata
        path = tmp_path / 'ckpt.pth'
        torch.save({'model': {'module.' + k: v for k, v in sd.items()}, 'epoch': 3}, path)
    loaded = _load(name, path, seed=4).eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize('name', MODELS)
def test_load_adapts_num_classes_and_img_size(name, tmp_path):
    model = _create(name, seed=3).eval()
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    check_load_adapts_head_and_size(model, lambda **kw: _load(name, path, **kw), width=64)


@pytest.mark.parametrize('name', MODELS)
def test_load_keeps_head_of_non_default_width(name, tmp_path):
    model = _create(name, seed=3, num_classes=10).eval()
    path = tmp_path / 'w.pth'
    torch.save(model.state_dict(), path)
    # timm drops the head when num_classes differs from the cfg's, so a 10-class checkpoint
    # declares its width in the overlay.
    loaded = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
        **dict(TINY, num_classes=10)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), model(_x()), rtol=0, atol=0)
    # the default 1000-class cfg against a 10-class checkpoint still loads (fresh head)
    thousand = _load(name, path)
    assert thousand.head.weight.shape == (1000, 64)


@pytest.mark.parametrize('name', MODELS)
def test_load_in_chans_1(name, tmp_path):
    model = _create(name, seed=3)
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    gray = _load(name, path, in_chans=1).eval()
    want = model.patch_embed.proj.weight.sum(1, keepdim=True)
    torch.testing.assert_close(gray.patch_embed.proj.weight, want)
    with torch.no_grad():
        assert gray(_x(c=1)).shape == (2, 1000)


def test_checkpoint_filter_errors_name_the_key():
    model = _create(MODELS[0])
    sd = model.state_dict()
    bad = dict(sd)
    bad['blocks.0.mlp.fc1.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1\.weight.*\(3, 3\)"):
        checkpoint_filter_fn(bad, model)
    out = checkpoint_filter_fn({'state_dict_ema': sd, 'state_dict': {}}, model)
    assert out.keys() == sd.keys()
    legacy = dict(sd, pos_embed=torch.randn(1, 9, 64))  # [1, N, C] square layout
    assert checkpoint_filter_fn(legacy, model)['pos_embed'].shape == (1, 4, 4, 64)


@pytest.mark.parametrize('name', MODELS)
def test_runtime_resolution(name):
    model = _create(name).eval()
    with torch.no_grad():
        assert model.forward_features(_x(2, 32, 48)).shape == (2, 2, 3, 64)
        assert model(_x(1, 112, 80)).shape == (1, 1000)


@pytest.mark.parametrize('name', MODELS)
def test_bad_inputs_raise_clear_errors(name):
    model = _create(name).eval()
    with pytest.raises(ValueError, match=r'70x64 .*16x16'):
        model(_x(1, 70, 64))
    with pytest.raises(ValueError, match='expected 3 input channels, got 1'):
        model(_x(c=1))
    with pytest.raises(ValueError, match='4-D|3-D'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match=r'img_size 70x70 .*16x16'):
        _create(name, img_size=70)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(10, 'max')


def test_bf16_autocast_forward_backward():
    # One model is enough: TINY makes every entrypoint the same module, and CPU bf16 is slow.
    model = _create(MODELS[0], num_classes=10)
    check_bf16_autocast_step(model, _x())


def test_no_weight_decay_and_param_groups():
    model = _create(MODELS[0])
    skip = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert skip <= params.keys()
    gates = {n for n in params if '.A_log_' in n or '.dt_bias_' in n}
    assert len(gates) == 4 * TINY['depth'] and gates | {'pos_embed'} <= skip

    opt = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(params[n]) in no_decay for n in skip)

    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == TINY['depth'] + 2  # stem, blocks, final norm


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']


@pytest.mark.parametrize('name', MODELS[:1])
def test_every_adaptation_on_load_is_a_warning_naming_it(name, tmp_path, caplog):
    model = _create(name, seed=3, num_classes=10).eval()
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    overlay = dict(file=str(path), num_classes=10)
    with caplog.at_level('WARNING'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **dict(TINY, num_classes=10))
    assert _warnings(caplog) == []  # nothing changed, nothing said
    caplog.clear()
    with caplog.at_level('WARNING'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **dict(TINY, num_classes=5))
    assert any('classifier head reset: the weights have 10 classes, the model 5' in m for m in _warnings(caplog))
    caplog.clear()
    with caplog.at_level('WARNING'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **dict(TINY, num_classes=10,
                                                                                        img_size=96))
    assert any('pos_embed resized (1, 4, 4, 64) -> (1, 6, 6, 64)' in m for m in _warnings(caplog))
    caplog.clear()
    # the head fits but the default cfg says 1000 classes: timm drops it; the warning names the fix
    with caplog.at_level('WARNING'):
        _load(name, path, num_classes=10)
    assert any('timm drops it' in m and 'num_classes=10' in m and 'local-dir' in m for m in _warnings(caplog))


@pytest.mark.parametrize('name', MODELS[:1])
def test_gray_weights_fine_tune_to_rgb_without_an_overlay_key(name, tmp_path):
    """1-channel weights into an in_chans=3 model with only file= in the overlay (the default cfg claims
    3 source channels): the first conv is repeated over the channels and scaled by 1/3."""
    gray = _create(name, seed=3, in_chans=1).eval()
    path = tmp_path / 'w.safetensors'
    save_file(gray.state_dict(), str(path))
    rgb = _load(name, path).eval()
    w = gray.patch_embed.proj.weight
    torch.testing.assert_close(rgb.patch_embed.proj.weight, w.repeat(1, 3, 1, 1) / 3)
    x = _x(c=1)
    with torch.no_grad():  # a gray image replicated to RGB gives the gray model's output
        torch.testing.assert_close(rgb(x.repeat(1, 3, 1, 1)), gray(x), rtol=1e-5, atol=1e-5)


def test_weights_of_another_size_fail_with_the_call_that_fits(tmp_path):
    """The obvious first call on exported weights of a resized model: the error names the saved model args
    and the local-dir: call (it was a bare shape error)."""
    from gka_vision.engine.checkpoint import export_weights
    name = MODELS[0]
    model = _create(name, seed=3, num_classes=10)
    path = export_weights(model.state_dict(), tmp_path, model_name=name,
                          pretrained_cfg=dict(model.pretrained_cfg, num_classes=10),
                          model_args=dict(TINY, num_classes=10))
    with pytest.raises(ValueError) as e:
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    msg = str(e.value)
    assert "has shape" in msg and "embed_dim=64" in msg and "depth=3" in msg
    assert f"local-dir:{tmp_path}" in msg
    ok = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(ok(_x()), model.eval()(_x()), rtol=0, atol=0)
