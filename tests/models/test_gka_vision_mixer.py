"""GKAVisionMixer (MambaVision's mixer with one causal GKA scan): structure, causality of the scan branch,
agreement with a direct composition of its parts, gradients, errors (CPU, torch backend)."""
import pytest
import torch
import torch.nn.functional as F

from gka_vision.layers import GKAVisionMixer
from gka_vision.layers.gka_vision_mixer import power_of_two_head_dim
from gka_vision.layers.mamba_mixer import MambaVisionMixer
from gka_vision.ops import gka_scan

from timm_api import check_mixer_backward  # tests/timm_api.py

torch.set_num_threads(1)
DIM, HEADS = 80, 4  # scan: 5 heads of 8 on 40 channels (80 / 4 = 20, rounded down to a power of two)


def _mixer(**kwargs):
    torch.manual_seed(0)
    return GKAVisionMixer(DIM, HEADS, **dict(dict(num_iter=8, backend='torch'), **kwargs))


def test_shapes_and_heads_follow_mambavision_mixer():
    m = _mixer()
    assert (m.num_heads, m.head_dim) == (5, 8)
    mv = MambaVisionMixer(DIM)
    for name in ('in_proj', 'out_proj', 'conv1d_z'):
        assert getattr(m, name).weight.shape == getattr(mv, name).weight.shape, name
    x = torch.randn(2, 30, DIM)
    y = m(x, (5, 6))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert _mixer(num_iter=8)(x).shape == x.shape  # hw is optional (1D scan)


def test_matches_direct_composition():
    """The forward is exactly the module docstring's equations, written out here with plain torch ops."""
    m = _mixer(head_dim=20)
    x = torch.randn(2, 21, DIM)
    B, N, half, nh, D = 2, 21, DIM // 2, 2, 20
    with torch.no_grad():
        xs, z = m.in_proj(x).chunk(2, dim=-1)
        conv = lambda t, w, b=None: F.silu(F.conv1d(t.transpose(1, 2), w, b, padding=1, groups=half)).transpose(1, 2)  # noqa: E731
        xs, z = conv(xs, m.conv1d_x.weight, m.conv1d_x.bias), conv(z, m.conv1d_z.weight)
        wq, wk = m.qk.weight.chunk(2)
        wb, wa, wg = m.gate_proj.weight.chunk(3)
        bb, ba, bg = m.gate_proj.bias.chunk(3)
        beta = torch.sigmoid(xs @ wb.T + bb).unsqueeze(-1)
        q = F.normalize((xs @ wq.T).view(B, N, nh, D), dim=-1, eps=1e-6)
        k = F.normalize((xs @ wk.T).view(B, N, nh, D), dim=-1, eps=1e-6) * beta
        v = xs.view(B, N, nh, D) * beta
        alpha = torch.sigmoid(xs @ wa.T + ba)
        g = -m.A_log.exp() * F.softplus(xs @ wg.T + bg + m.dt_bias)
        y = gka_scan(q, k, v, alpha, g, num_iter=8, backend='torch')
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * m.norm.weight
        want = m.out_proj(torch.cat([y.reshape(B, N, half), z], dim=-1))
        torch.testing.assert_close(m(x, (3, 7)), want, rtol=1e-5, atol=1e-5)
    assert torch.all(bg == 0)  # the forget gate's only bias is dt_bias


def test_scan_is_causal_and_conv_reach_is_local():
    """Token 0 reaches the last token (through the causal scan), the last token reaches only its conv
    neighbourhood (d_conv = 3: the token before it), never token 0."""
    m = _mixer()
    x = torch.randn(1, 30, DIM, requires_grad=True)
    y = m(x, (5, 6))
    (g_last,) = torch.autograd.grad(y[0, -1].sum(), x, retain_graph=True)
    assert g_last[0, 0].abs().sum() > 1e-6
    (g_first,) = torch.autograd.grad(y[0, 0].sum(), x)
    assert g_first[0, 2:].abs().sum() == 0  # tokens 2.. are out of reach of token 0: no backward scan
    assert g_first[0, 1].abs().sum() > 0    # token 1 through the 'same'-padded conv


def test_gradients_reach_every_parameter_and_are_finite():
    check_mixer_backward(_mixer(), torch.randn(2, 12, DIM), (3, 4))


def test_backend_reference_agrees():
    m = _mixer(num_iter=30)
    x = torch.randn(2, 12, DIM)
    with torch.no_grad():
        y_torch = m(x)
        m.backend = 'reference'
        y_ref = m(x)
    torch.testing.assert_close(y_torch, y_ref, rtol=2e-2, atol=1e-3)


def test_no_weight_decay_names_exist():
    m = _mixer()
    names = dict(m.named_parameters())
    assert m.no_weight_decay() <= set(names)


@pytest.mark.parametrize('dim,heads,match', [(81, 4, 'even'), (80, 0, 'num_heads must be at least 1')])
def test_bad_sizes_are_errors_naming_them(dim, heads, match):
    with pytest.raises(ValueError, match=match):
        GKAVisionMixer(dim, heads)


def test_wrong_token_width_is_an_error():
    with pytest.raises(ValueError, match=r'\[B, N, 80\]'):
        _mixer()(torch.randn(2, 12, 40))


def test_scan_head_dim_is_a_power_of_two_by_default():
    """The largest power of two that is at most E / num_heads and divides E / 2: the kernels' tiles."""
    assert [power_of_two_head_dim(w, d) for w, d in ((160, 40), (192, 48), (256, 64), (40, 20), (24, 100), (7, 5))] \
        == [32, 32, 64, 8, 8, 1]
    assert [(m.num_heads, m.head_dim) for m in (GKAVisionMixer(320, 8), GKAVisionMixer(640, 16),
                                                  GKAVisionMixer(512, 8), GKAVisionMixer(320, 8, expand=2))] \
        == [(5, 32), (10, 32), (4, 64), (5, 64)]


def test_head_dim_option_sets_the_scan_heads():
    m = GKAVisionMixer(DIM, HEADS, head_dim=20, num_iter=4, backend='torch')
    assert (m.num_heads, m.head_dim) == (2, 20)
    x = torch.randn(2, 9, DIM)
    assert m(x).shape == x.shape
    with pytest.raises(ValueError, match='head_dim'):
        GKAVisionMixer(DIM, HEADS, head_dim=12)
