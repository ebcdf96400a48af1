"""timm's per-model checks on every model this project registers (gka_*, gkavision_*, mamba_vim_*,
mambavision_*), on the CPU: forward, backward (also with stochastic depth and dropout), default_cfg, forward_features / forward_head, features_only,
forward_intermediates, FX forward and backward (timm's FX harness, plain torch.fx, feature_cls='fx'), the
structure contract on the meta device (device= / dtype= factory kwargs, reset_classifier, frozen parameters),
set_input_size persisted through save/reload, and TorchScript (torch.jit.script runs and matches eager; the
scans stay Python calls inside it, so torch.jit.save of a scripted model fails with TorchScript's error).

Written from what timm's tests/test_models.py checks for every architecture (not copied from it). Each model
keeps its own widths, heads and mixers but runs with fewer blocks (and Chebyshev iterations), as timm's suite
shrinks its large models, and at 64 px, so that a model stays far under 4 GB and the module within CI's
minutes (the default cfg's pool_size is checked against the feature reduction; timm's own file, run on these
models at its own sizes, is quoted in the README).
"""
import fnmatch

import pytest
import timm
import torch

import gka_vision  # noqa: F401  (registers the models)

from timm_api import (check_backward, check_default_cfg, check_features_only, check_forward,  # tests/timm_api.py
                      check_forward_intermediates, check_fx_backward, check_fx_features, check_fx_forward,
                      check_meta_structure,
                      check_set_input_size_roundtrip, check_torchscript, create, images)

FAMILIES = ('gka_*', 'gkavision_*', 'mamba_vim_*', 'mambavision_*')
MODELS = sorted({m for f in FAMILIES for m in timm.list_models(f)})

# per family: fewer blocks, fewer solver iterations, the CPU scan backends; every other size is the model's own
SMALL = {
    'gka_*': dict(depth=3, num_iter=4, backend='torch'),  # 3 blocks: timm's features_only default (3 levels)
    'mamba_vim_*': dict(depth=3, backend='torch'),
    'gkavision_*': dict(depths=(1, 1, 2, 2), num_iter=4, backend='torch'),
    'mambavision_*': dict(depths=(1, 1, 2, 2), backend='torch'),
}
torch.set_num_threads(2)


def small(name):
    return next(v for k, v in SMALL.items() if fnmatch.fnmatch(name, k))


def _make(name):
    return lambda **kw: create(name, small(name), **kw)


def _x(b=2, s=64):
    return images(b, s, s)


def test_every_family_is_covered():
    assert len(MODELS) == 10
    for f in FAMILIES:
        assert timm.list_models(f), f


@pytest.mark.parametrize('name', MODELS)
def test_forward(name):
    check_forward(_make(name)(), _x(1))


@pytest.mark.parametrize('drop', [{}, dict(drop_path_rate=0.1, drop_rate=0.1)], ids=['default', 'drop'])
@pytest.mark.parametrize('name', MODELS)
def test_backward(name, drop):
    check_backward(_make(name)(num_classes=42, **drop), _x(), 42)


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg(name):
    check_default_cfg(_make(name), size=64)


@pytest.mark.parametrize('name', MODELS)
def test_meta_device_structure(name):
    """At the real sizes (the meta device allocates nothing): device= / dtype=, reset_classifier, frozen
    parameters, group_matcher, no_weight_decay."""
    check_meta_structure(lambda **kw: timm.create_model(name, **kw))


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    check_features_only(_make(name), _x(1))


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    check_forward_intermediates(_make(name)(), _x(1))


@pytest.mark.parametrize('name', MODELS)
def test_fx_forward(name):
    check_fx_forward(_make(name)(), _x(1))


@pytest.mark.parametrize('name', MODELS)
def test_fx_backward(name):
    check_fx_backward(_make(name)(num_classes=42), _x(), 42)


@pytest.mark.parametrize('name', MODELS)
def test_fx_feature_extraction(name):
    check_fx_features(_make(name), _x(1))


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated', 'ignore:`torch.jit.save` is deprecated')
@pytest.mark.parametrize('name', MODELS)
def test_torchscript(name):
    check_torchscript(_make(name), _x(1))


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated', 'ignore:`torch.jit.save` is deprecated')
def test_fx_and_torchscript_with_the_bidirectional_gka_mixer_in_windows():
    """mixer='gka_bi' (BidirectionalGKAMixer inside the hybrid's windows) traces and scripts too."""
    make = lambda **kw: create('gkavision_tiny', small('gkavision_tiny'), mixer='gka_bi', **kw)  # noqa: E731
    check_fx_forward(make(), _x(1))
    check_fx_backward(make(num_classes=42), _x(), 42)
    check_torchscript(make, _x(1))


@pytest.mark.parametrize('name', MODELS)
def test_set_input_size_persists_through_save_and_reload(name, tmp_path):
    model = _make(name)(num_classes=7)
    x = _x(1)
    if hasattr(model, 'pos_embed'):  # isotropic: the stored pos_embed grid and the patch kernel change
        with torch.no_grad():
            before = model.eval()(x)
        model.set_input_size(img_size=64)  # the stored 14x14 grid resized as the forward resizes it on the fly
        assert model.pos_embed.shape[1:3] == (4, 4) and model.img_size == (64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
        restored = check_set_input_size_roundtrip(model, dict(small(name), num_classes=7), dict(patch_size=8),
                                                  x, tmp_path)
        assert restored.patch_size == (8, 8) and restored.pos_embed.shape[1:3] == (8, 8)
        assert restored.img_size == (64, 64)
        assert [i['reduction'] for i in restored.feature_info] == [8] * len(restored.feature_info)
        with pytest.raises(ValueError, match='not divisible by the patch size'):
            model.set_input_size(img_size=100)
    else:  # hierarchical: no weight depends on the size; the windows of stages 2-3 can change
        restored = check_set_input_size_roundtrip(model, dict(small(name), num_classes=7),
                                                  dict(img_size=96, window_size=3), x, tmp_path)
        assert restored.img_size == (96, 96) and [s.window_size for s in restored.stages] == [3] * 4
        with pytest.raises(ValueError, match='window_size'):
            model.set_input_size(window_size=(3, 3))
