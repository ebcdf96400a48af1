"""BidirectionalGKAMixer: shapes, both scan directions, gradients, gate init, errors (CPU, torch backend)."""

import pytest
import torch
import torch.nn.functional as F

from gka_vision.layers import BidirectionalGKAMixer, GatedRMSNorm
from gka_vision.layers.mixer_parts import log_forget_gate

from timm_api import check_mixer_backward  # tests/timm_api.py

DIM, HEADS = 32, 2


def _mixer(**kwargs):
    torch.manual_seed(0)
    kwargs = dict(dict(num_iter=6, backend='torch'), **kwargs)
    return BidirectionalGKAMixer(DIM, HEADS, **kwargs)


def test_output_shape_non_square_grid():
    m = _mixer()
    x = torch.randn(2, 3 * 5, DIM)
    y = m(x, (3, 5))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize('src,dst', [(-1, 0), (0, -1)], ids=['last_to_first', 'first_to_last'])
def test_both_directions_matter(src, dst):
    # On a 5x6 grid the first and last tokens are far outside the 3x3 conv's reach, so any dependence
    # between them must come through the scans: the backward scan for last->first, the forward for first->last.
    m = _mixer()
    x = torch.randn(1, 30, DIM, requires_grad=True)
    y = m(x, (5, 6))
    (grad,) = torch.autograd.grad(y[0, dst].sum(), x)
    assert grad[0, src].abs().sum() > 1e-6


def test_gradients_reach_every_parameter_and_are_finite():
    check_mixer_backward(_mixer(), torch.randn(2, 12, DIM), (3, 4))


def test_backend_is_passed_through():
    # 'reference' is the exact float64 solve; the chunked torch backend with 30 iterations must agree.
    m = _mixer(num_iter=30)
    x = torch.randn(2, 12, DIM)
    with torch.no_grad():
        y_torch = m(x, (3, 4))
        m.backend = 'reference'
        y_ref = m(x, (3, 4))
    torch.testing.assert_close(y_torch, y_ref, rtol=2e-2, atol=1e-3)
    assert (y_torch - y_ref).abs().mean() < 1e-4 * y_ref.abs().mean() + 1e-5
    m.backend = 'no-such-backend'
    with pytest.raises(ValueError, match='backend'):
        m(x, (3, 4))


def test_gate_init_and_no_weight_decay():
    m = BidirectionalGKAMixer(64, 4)
    for d in ('fwd', 'bwd'):
        A = getattr(m, f'A_log_{d}').exp()
        assert ((A >= 1) & (A <= 16)).all()
        dt = F.softplus(getattr(m, f'dt_bias_{d}'))
        assert ((dt >= 1e-4 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5))).all()
    names = dict(m.named_parameters())
    assert m.no_weight_decay() == {'A_log_fwd', 'A_log_bwd', 'dt_bias_fwd', 'dt_bias_bwd'}
    assert m.no_weight_decay() <= names.keys()
    # the two directions get independent gates
    assert not torch.equal(m.A_log_fwd, m.A_log_bwd)


def test_forget_gates_are_fp32_and_nonpositive():
    m = _mixer()
    x = torch.randn(2, 12, DIM, dtype=torch.bfloat16)
    m = m.to(torch.bfloat16)
    g = log_forget_gate(m.a_proj_fwd(x), m.A_log_fwd, m.dt_bias_fwd)
    assert g.dtype == torch.float32
    assert (g <= 0).all()


def test_bf16_autocast():
    m = _mixer()
    x = torch.randn(2, 12, DIM, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x, (3, 4))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    y.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize('mixer, kwargs, qk_dtype', [('gka', {}, torch.bfloat16),
                                                      ('gka', dict(qk_input_dtype=False), torch.float32),
                                                      ('gka_bi', {}, torch.float32),
                                                      ('gka_bi', dict(qk_input_dtype=True), torch.bfloat16)])
def test_scan_gets_q_and_k_in_the_projection_dtype(mixer, kwargs, qk_dtype, monkeypatch):
    """CUDA autocast runs F.normalize in fp32; with qk_input_dtype (GKAVisionMixer's default) the scan still gets q
    and k in the projections' bf16 (docs/kernels.md, "Precision by input dtype"); v is bf16 either way.
    CPU autocast keeps F.normalize in bf16, so the test makes F.normalize return fp32 as CUDA autocast does."""
    from gka_vision.layers import create_mixer
    from gka_vision.layers import gka_mixer, gka_vision_mixer

    normalize = F.normalize
    monkeypatch.setattr(F, 'normalize', lambda t, **kw: normalize(t.float(), **kw))
    seen = {}

    def spy(q, k, v, *args, **kwargs):
        seen.update(q=q.dtype, k=k.dtype, v=v.dtype)
        return v.new_zeros(v.shape)

    monkeypatch.setattr(gka_mixer, 'gka_scan_bidirectional', lambda q, k, v, *a, **kw: spy(q, k, v))
    monkeypatch.setattr(gka_vision_mixer, 'gka_scan', lambda q, k, v, *a, **kw: spy(q, k, v))
    m = create_mixer(mixer, DIM, 4, **kwargs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        m(torch.randn(2, 12, DIM), (3, 4))
    assert seen == dict(q=qk_dtype, k=qk_dtype, v=torch.bfloat16)


@pytest.mark.parametrize('mixer', ['gka', 'gka_bi'])
def test_kernel_config_reaches_every_scan(mixer, monkeypatch):
    """The mixers' kernel_config (a GKAKernelConfig spec string) is handed to the scan as its config, from a flat
    timm.create_model kwarg too; a bad spec or a non-string fails when the mixer is built, naming the option."""
    import timm
    from gka_vision.layers import create_mixer
    from gka_vision.layers import gka_mixer, gka_vision_mixer
    seen = []

    def spy(q, k, v, *args, config=None, **kwargs):
        seen.append(config)
        return v.new_zeros(v.shape)

    monkeypatch.setattr(gka_mixer, 'gka_scan_bidirectional', spy)
    monkeypatch.setattr(gka_vision_mixer, 'gka_scan', spy)
    m = create_mixer(mixer, DIM, 4, kernel_config='exact_operands=0,num_warps=8')
    m(torch.randn(2, 12, DIM), (3, 4))
    assert seen == ['exact_operands=0,num_warps=8'] and 'kernel_config=' in repr(m)
    seen.clear()
    create_mixer(mixer, DIM, 4)(torch.randn(2, 12, DIM), (3, 4))
    assert seen == [''] and 'kernel_config' not in repr(create_mixer(mixer, DIM, 4))
    name = 'gkavision_tiny' if mixer == 'gka' else 'gka_tiny_patch16_224'
    model = timm.create_model(name, kernel_config='num_warps=8')
    assert {mod.kernel_config for mod in model.modules() if hasattr(mod, 'kernel_config')} == {'num_warps=8'}
    pytest.importorskip('gka_kernels')  # the spec is parsed where the kernels import
    with pytest.raises(ValueError, match='kernel_config.*exact_operands'):
        create_mixer(mixer, DIM, 4, kernel_config='exact_operands=maybe')
    with pytest.raises(ValueError, match='kernel_config.*unknown'):
        create_mixer(mixer, DIM, 4, kernel_config='warps=8')
    with pytest.raises(TypeError, match='kernel_config'):
        create_mixer(mixer, DIM, 4, kernel_config={'num_warps': 8})


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match='divisible'):
        BidirectionalGKAMixer(30, 4)
    m = _mixer()
    with pytest.raises(ValueError, match=r'N=12 .*3x5'):
        m(torch.randn(1, 12, DIM), (3, 5))
    with pytest.raises(ValueError, match='expected tokens'):
        m(torch.randn(1, 12, DIM + 1), (3, 4))


def test_gated_rmsnorm():
    n = GatedRMSNorm(8, eps=1e-6)
    x, g = torch.randn(4, 8), torch.randn(4, 8)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * F.silu(g)
    torch.testing.assert_close(n(x, g), want)
    assert n(x.bfloat16(), g.bfloat16()).dtype == torch.bfloat16
