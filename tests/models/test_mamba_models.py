"""Vim-style Mamba baselines (module mamba_vim) through the timm API, and the Mamba mixers; CPU, tiny configs.

Mirrors tests/models/test_gka_models.py: full sizes are only built on the meta device (parameter counts);
everything else overrides the sizes with TINY.
"""
import pytest
import torch
import timm
import timm.optim
from safetensors.torch import save_file

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.layers.mamba_mixer import BidirectionalMambaMixer, MambaVisionMixer
from gka_vision.ops.selective_scan import selective_scan

from timm_api import (check_bf16_autocast_step, check_default_cfg_and_head,  # tests/timm_api.py
                      check_grad_checkpointing_identical, check_grads, check_intermediates_match_features,
                      check_load_adapts_head_and_size, check_param_count, create, images, load, meta_model)

torch.set_num_threads(1)

MODELS = timm.list_models(module='mamba_vim')
TINY = dict(img_size=64, embed_dim=32, depth=3, d_state=4, backend='torch')
PARAM_TARGETS = {  # Vim-Ti / S / B
    'mamba_vim_tiny_patch16_224': 7e6,
    'mamba_vim_small_patch16_224': 26e6,
    'mamba_vim_base_patch16_224': 98e6,
}
WIDTHS = {'mamba_vim_tiny_patch16_224': 192, 'mamba_vim_small_patch16_224': 384, 'mamba_vim_base_patch16_224': 768}


def _create(name, seed=0, **kwargs):
    return create(name, TINY, seed, **kwargs)


def _load(name, path, seed=0, **kwargs):
    return load(name, path, TINY, seed, **kwargs)


_x = images


# ---------------------------------------------------------------- mixers

def _mixer_inputs(mixer, b=2, n=10, seed=0):
    torch.manual_seed(seed)
    return torch.randn(b, n, mixer.dim)


def test_vim_backward_direction_is_flipped_forward_computation():
    torch.manual_seed(0)
    m = BidirectionalMambaMixer(16, d_state=4, backend='torch')
    xz = m.in_proj(_mixer_inputs(m)).transpose(1, 2)
    xs, z = xz.chunk(2, dim=1)
    rev = m._direction(m.bwd, xs, z, reverse=True)
    flipped = m._direction(m.bwd, xs.flip(-1), z.flip(-1), reverse=False).flip(-1)
    torch.testing.assert_close(rev, flipped, rtol=1e-5, atol=1e-6)


def test_vim_directions_are_causal_and_anticausal():
    torch.manual_seed(0)
    m = BidirectionalMambaMixer(16, d_state=4, backend='torch')
    xs, z = m.in_proj(_mixer_inputs(m)).transpose(1, 2).chunk(2, dim=1)
    xs2 = xs.clone()
    xs2[..., 6:] += 1.0  # change the last tokens only
    fwd, fwd2 = m._direction(m.fwd, xs, z, False), m._direction(m.fwd, xs2, z, False)
    torch.testing.assert_close(fwd[..., :6], fwd2[..., :6])
    assert (fwd[..., 6:] - fwd2[..., 6:]).abs().max() > 1e-3
    xs3 = xs.clone()
    xs3[..., :4] += 1.0  # change the first tokens only
    bwd, bwd3 = m._direction(m.bwd, xs, z, True), m._direction(m.bwd, xs3, z, True)
    torch.testing.assert_close(bwd[..., 4:], bwd3[..., 4:])
    assert (bwd[..., :4] - bwd3[..., :4]).abs().max() > 1e-3


def test_vim_mixer_averages_the_two_directions():
    torch.manual_seed(0)
    m = BidirectionalMambaMixer(16, d_state=4, backend='torch')
    x = _mixer_inputs(m)
    xs, z = m.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    want = m.out_proj((0.5 * (m._direction(m.fwd, xs, z, False) + m._direction(m.bwd, xs, z, True))).transpose(1, 2))
    torch.testing.assert_close(m(x, (2, 5)), want)


def test_vim_mixer_forward_direction_matches_a_direct_scan():
    """The fwd direction = causal conv1d + SiLU + selective_scan with the module's own parameters."""
    torch.manual_seed(0)
    m = BidirectionalMambaMixer(8, d_state=3, d_conv=3, backend='torch')
    xs, z = m.in_proj(_mixer_inputs(m, n=7)).transpose(1, 2).chunk(2, dim=1)
    br = m.fwd
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(xs, (2, 0)), br.conv1d.weight, br.conv1d.bias,
                                      groups=m.d_inner)
    u = torch.nn.functional.silu(conv)
    dbc = br.x_proj(u.transpose(1, 2))
    dt, Bm, Cm = dbc.split([m.dt_rank, 3, 3], dim=-1)
    delta = (dt @ br.dt_proj.weight.T).transpose(1, 2)
    want = selective_scan(u, delta, -br.A_log.exp(), Bm.transpose(1, 2), Cm.transpose(1, 2), D=br.D, z=z,
                          delta_bias=br.dt_proj.bias, delta_softplus=True, backend='reference')
    torch.testing.assert_close(m._direction(br, xs, z, False), want)


def test_mambavision_mixer_shapes_grads_and_errors():
    torch.manual_seed(0)
    m = MambaVisionMixer(24, d_state=4, backend='torch')
    x = _mixer_inputs(m).requires_grad_()
    y = m(x, (2, 5))
    assert y.shape == x.shape
    y.square().mean().backward()
    check_grads(m)
    assert m.no_weight_decay() <= dict(m.named_parameters()).keys()
    with pytest.raises(ValueError, match=r'\[B, N, 24\]'):
        m(torch.randn(2, 10, 23))
    with pytest.raises(ValueError, match='even'):
        MambaVisionMixer(7)


def test_dt_init_survives_model_init():
    model = _create(MODELS[0])
    b = model.blocks[0].mixer.fwd.dt_proj.bias
    dt = torch.nn.functional.softplus(b)
    assert (dt > 0.9e-4).all() and (dt < 0.11).all() and dt.std() > 0  # Mamba's dt ~ logU(1e-3, 1e-1)


# ---------------------------------------------------------------- models

def test_all_sizes_registered():
    assert set(PARAM_TARGETS) <= set(MODELS)


@pytest.mark.parametrize('name', MODELS)
def test_param_count_and_width(name):
    model = meta_model(name)
    check_param_count(model, PARAM_TARGETS[name], name)
    assert model.embed_dim == WIDTHS[name] and len(model.blocks) == 24


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_and_head(name):
    check_default_cfg_and_head(_create(name), 'NHWC', (14, 14))


@pytest.mark.parametrize('name', MODELS)
def test_features_only_and_intermediates(name):
    model = _create(name, features_only=True).eval()
    assert model.feature_info.channels() == [32] * 3 and model.feature_info.reduction() == [16] * 3
    with torch.no_grad():
        feats = model(_x(2, 64, 96))
    assert len(feats) == 3 and all(f.shape == (2, 32, 4, 6) and torch.isfinite(f).all() for f in feats)

    model = _create(name)
    check_intermediates_match_features(model, _x(), [(2, 32, 4, 4)] * 3, early=0)
    assert len(model.feature_info) == 3


@pytest.mark.parametrize('name', MODELS[:1])
def test_grad_checkpointing_identical(name):
    check_grad_checkpointing_identical(lambda: _create(name), _x(), grad_atol=1e-7)


@pytest.mark.parametrize('name', MODELS)
def test_save_then_load_adapts_head_and_size(name, tmp_path):
    model = _create(name, seed=3).eval()
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    x = _x()
    loaded = _load(name, path, seed=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    check_load_adapts_head_and_size(model, lambda **kw: _load(name, path, **kw), width=32)


@pytest.mark.parametrize('name', MODELS[:1])
def test_runtime_resolution_and_bad_inputs(name):
    model = _create(name).eval()
    with torch.no_grad():
        assert model.forward_features(_x(2, 32, 48)).shape == (2, 2, 3, 32)
    with pytest.raises(ValueError, match=r'70x64 .*16x16'):
        model(_x(1, 70, 64))
    with pytest.raises(ValueError, match='expected 3 input channels, got 1'):
        model(_x(c=1))
    with pytest.raises(ValueError, match=r'img_size 70x70 .*16x16'):
        _create(name, img_size=70)
    with pytest.raises(ValueError, match='unknown backend'):
        _create(name, backend='cuda_magic')(_x())


@pytest.mark.parametrize('name', MODELS[:1])
def test_bf16_autocast_and_param_groups(name):
    model = _create(name, num_classes=10)
    check_bf16_autocast_step(model, _x())

    skip = model.no_weight_decay()
    params = dict(model.named_parameters())
    ssm = {n for n in params if n.endswith('.A_log') or n.endswith('.D')}
    assert len(ssm) == 4 * TINY['depth'] and ssm | {'pos_embed'} <= skip <= params.keys()
    opt = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(params[n]) in no_decay for n in skip)
    assert len(timm.models.group_parameters(model, model.group_matcher())) == TINY['depth'] + 2


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize('d_conv', [3, 4])
def test_mambavision_mixer_convs_are_same_padded(d_conv):
    """PyTorch's 'same' puts (K-1)//2 zeros left and K//2 right; with a causal scan after the x conv,
    the output at token 0 sees tokens 0..K//2 and nothing later."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 7)
    w = torch.randn(4, 1, d_conv)
    torch.testing.assert_close(
        torch.nn.functional.conv1d(torch.nn.functional.pad(x, ((d_conv - 1) // 2, d_conv // 2)), w, groups=4),
        torch.nn.functional.conv1d(x, w, padding='same', groups=4))
    m = MambaVisionMixer(8, d_state=2, d_conv=d_conv, backend='torch')
    tokens = torch.randn(1, 7, 8)
    reach = d_conv // 2
    far, near = tokens.clone(), tokens.clone()
    far[:, reach + 1:] += 1.0
    near[:, reach] += 1.0
    with torch.no_grad():
        y, y_far, y_near = m(tokens), m(far), m(near)
    torch.testing.assert_close(y_far[:, 0], y[:, 0])
    assert (y_near[:, 0] - y[:, 0]).abs().max() > 1e-4
