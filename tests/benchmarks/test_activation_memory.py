"""Activation memory: the saved-tensor counter (benchmarks/activation_memory.py), the mixer's smaller saved set
and the recompute_mixer option (CPU, small shapes). Gradients must not change; the counts must drop."""
import pytest
import torch
import torch.nn.functional as F

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py
from gka_vision.layers import BidirectionalGKAMixer
from gka_vision.layers.mixer_parts import log_forget_gate
from gka_vision.models.gka_vit import GKAViT
from gka_vision.models.gkavision import GKAVision
from gka_vision.ops import gka_scan_bidirectional

am = load_benchmark('activation_memory')

C, NH = 64, 2


def _reference_mixer_forward(m, x, hw):
    """The mixer's arithmetic as it was written before the activation-memory changes: five separate small
    projections, q/k normalisation and beta scaling and the gated RMSNorm with every intermediate saved."""
    B, N, Cx = x.shape
    H, W = hw
    nh, D = m.num_heads, m.head_dim
    u = m.conv(x.transpose(1, 2).reshape(B, Cx, H, W))
    u = F.silu(u).flatten(2).transpose(1, 2)
    q, k, v = m.qkv(u).view(B, N, 3, nh, D).unbind(2)
    q = F.normalize(q, dim=-1, eps=1e-6)
    k = F.normalize(k, dim=-1, eps=1e-6)
    beta = torch.sigmoid(m.beta_proj(x)).unsqueeze(-1)
    k = k * beta
    v = v * beta
    alpha = torch.sigmoid(m.alpha_proj(x))
    g_fwd = log_forget_gate(m.a_proj_fwd(x), m.A_log_fwd, m.dt_bias_fwd)
    g_bwd = log_forget_gate(m.a_proj_bwd(x), m.A_log_bwd, m.dt_bias_bwd)
    o = gka_scan_bidirectional(q, k, v, alpha, g_fwd, g_bwd, ridge_ratio=m.ridge_ratio, num_iter=m.num_iter,
                               backend=m.backend)
    o = m.norm(o, m.gate_proj(x).view(B, N, nh, D))
    return m.proj(o.reshape(B, N, Cx))


def _grads(module, fn, x):
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (y.square().mean() + y.sum() * 1e-2).backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _assert_same(a, b, rtol=1e-5, atol=1e-6):
    ya, xa, pa = a
    yb, xb, pb = b
    torch.testing.assert_close(ya, yb, rtol=rtol, atol=atol)
    torch.testing.assert_close(xa, xb, rtol=rtol, atol=atol)
    assert pa.keys() == pb.keys()
    for n in pa:
        torch.testing.assert_close(pa[n], pb[n], rtol=rtol, atol=atol, msg=lambda s: f'{n}: {s}')


def test_mixer_gradients_match_the_reference_arithmetic():
    torch.manual_seed(0)
    m = BidirectionalGKAMixer(C, NH, num_iter=6, backend='torch')
    x = torch.randn(2, 6 * 5, C)
    new = _grads(m, lambda t: m(t, (6, 5)), x)
    ref = _grads(m, lambda t: _reference_mixer_forward(m, t, (6, 5)), x)
    # fp32 on both sides, but the fused projection and the recomputed norms sum in another order: elements near
    # zero differ by a few ulps of the largest ones (1.5e-6 seen with MKL's thread-dependent matmul blocking)
    _assert_same(new, ref, atol=1e-5)


def _saved_per_token(module, fn, n_tokens):
    """Batch-dependent saved bytes per token under bf16 autocast on the GPU code paths (batch 2 minus 1)."""
    totals = []
    for batch in (1, 2):
        x = torch.randn(batch, n_tokens, C, requires_grad=True) * 1.0  # non-leaf, as a norm1 output
        records, _ = am.count_saved(module, lambda: fn(x))
        totals.append(sum(r['bytes'] for r in records))
    return (totals[1] - totals[0]) / n_tokens


def test_mixer_saves_less_by_the_expected_amount():
    # Per token, the reference saves (bytes): 4 more bf16 copies of x for the separate small projections (8C);
    # the normalised k in fp32 (4C) and the norms/denominators of q and k (16 NH); in the gated RMSNorm the
    # fp32 gate copy, silu(gate), two products (16C) and rsqrt (4 NH). The new mixer keeps instead the fused
    # projection output as the norm's recompute input (2 (C + 4 NH)), and beta enters the q/k recompute as its
    # logits, a view of that same output, instead of its sigmoid (2 NH). Net drop: 26 C + 14 NH.
    torch.manual_seed(0)
    m = BidirectionalGKAMixer(C, NH, num_iter=2, backend='auto')
    new = _saved_per_token(m, lambda x: m(x, (8, 8)), 64)
    ref = _saved_per_token(m, lambda x: _reference_mixer_forward(m, x, (8, 8)), 64)
    assert ref - new == 26 * C + 14 * NH
    # and what remains: qkv (6C), conv in/out + silu out (6C), x for the fused projections (2C), q, k fp32
    # (8C), v (2C), Triton x fp32 (8C), the scan output (4C), gate/fused projection (2C + 8 NH), proj input
    # (2C), gates/fro/alpha/forget-gate terms (NH terms)
    assert new == 40 * C + 42 * NH
    # with q and k in their projection's bf16 (qk_input_dtype): the scan's saved q and k take 4C instead of 8C,
    # its output (the norm's recompute input) 2C instead of 4C
    m.qk_input_dtype = True
    assert new - _saved_per_token(m, lambda x: m(x, (8, 8)), 64) == 6 * C


def _tiny_vit(**kw):
    torch.manual_seed(0)
    return GKAViT(img_size=32, patch_size=8, embed_dim=C, depth=2, num_heads=NH, num_classes=5,
                  mixer_kwargs=dict(num_iter=4, backend='torch'), **kw)


def test_recompute_mixer_gradients_identical():
    x = torch.randn(2, 3, 32, 32)
    base = _tiny_vit()
    rc = _tiny_vit(recompute_mixer=True)
    rc.load_state_dict(base.state_dict())
    assert all(b.recompute_mixer for b in rc.blocks) and not any(b.recompute_mixer for b in base.blocks)
    assert all(b.mixer.sequential_backward for b in rc.blocks)
    assert not any(b.mixer.sequential_backward for b in base.blocks)
    rc.set_recompute_mixer(False)
    assert not any(b.mixer.sequential_backward or b.recompute_mixer for b in rc.blocks)
    rc.set_recompute_mixer(True)
    _assert_same(_grads(base, base, x), _grads(rc, rc, x), rtol=0, atol=0)


def test_recompute_mixer_keeps_only_the_block_input():
    def count(model):
        x = torch.randn(2, 3, 32, 32)
        records, _ = am.count_saved(model, lambda: model(x).sum())
        return records

    base = count(_tiny_vit())
    model = _tiny_vit()
    model.set_recompute_mixer(True)
    rc = count(model)

    def in_mixer(r):
        return r['module'].endswith('.norm1') or '.mixer' in r['module']
    mixer_bytes = sum(r['bytes'] for r in base if in_mixer(r))
    assert mixer_bytes > 0
    # nothing saved inside norm1 + mixer; the checkpoint keeps each block's input (bf16 tokens) instead
    assert not [r for r in rc if in_mixer(r)]
    inputs = [r for r in rc if r['how'] == 'checkpoint input']
    assert len(inputs) == 2 and all(r['dtype'] == 'bfloat16' and r['shape'] == (2, 16, C) for r in inputs)
    total = lambda recs: sum(r['bytes'] for r in recs)  # noqa: E731
    assert total(rc) == total(base) - mixer_bytes + total(inputs)
    assert total(rc) < total(base) - mixer_bytes / 2


@pytest.mark.parametrize('mixer', ['gka', 'gka_bi'])
def test_gkavision_recompute_mixer_kwarg_and_setter(mixer):
    kw = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=(4, 4, 4, 4),
              num_classes=3, mixer_kwargs=dict(num_iter=2, backend='torch'), mixer=mixer)
    torch.manual_seed(0)
    base = GKAVision(**kw)
    torch.manual_seed(0)
    rc = GKAVision(recompute_mixer=True, **kw)
    blocks = [m for m in rc.modules() if hasattr(m, 'recompute_mixer')]
    assert blocks and all(b.recompute_mixer for b in blocks)
    # the GKA mixers follow: their Triton backward runs one scan direction at a time
    mixers = [m for m in rc.modules() if isinstance(m, BidirectionalGKAMixer)]
    assert bool(mixers) == (mixer == 'gka_bi') and all(m.sequential_backward for m in mixers)
    assert not any(m.sequential_backward for m in base.modules() if isinstance(m, BidirectionalGKAMixer))
    x = torch.randn(2, 3, 64, 64)
    _assert_same(_grads(base, base, x), _grads(rc, rc, x), rtol=0, atol=0)
    rc.set_recompute_mixer(False)
    assert not any(b.recompute_mixer for b in blocks) and not any(m.sequential_backward for m in mixers)


def test_tool_flash_stand_in_and_intercept():
    # DeiT-style attention counts flash attention's saved set (q, k, v views of one qkv, out, fp32 lse),
    # not the CPU math path's T x T attention matrix
    timm = pytest.importorskip('timm')
    model = timm.create_model('deit_tiny_patch16_224', img_size=64, depth=1, num_classes=0)
    x = torch.randn(1, 3, 64, 64)
    records, _ = am.count_saved(model, lambda: model(x).sum())
    attn = [r for r in records if r['module'] == 'blocks.0.attn']
    T = 17
    assert sorted(r['bytes'] for r in attn) == sorted([T * 192 * 3 * 2, T * 192 * 2, 3 * T * 4])
    res = am.measure('deit_tiny_patch16_224', img_size=64, batch=4, intercept_img_size=32)
    assert res['saved_bytes'] > 0 and res['scan_transient_bytes'] == 0


def test_scan_transient_model_sequential_backward():
    """The tool's model of the Triton backward's transient buffers: the sequential backward holds one
    direction's chunk states (U/W stored over H_p/S_p: two buffers) and qbar (the split solve kernel's hand-over,
    the default at head dim 64) instead of both directions'; chunk=32 runs unsplit, without qbar."""
    tool = load_benchmark("activation_memory")
    B, T, H, D = 16, 4097, 3, 64
    states = lambda chunk: 2 * B * H * -(-T // chunk) * 64 * 64 * 4  # noqa: E731  (one direction's)
    qbar = B * T * H * D * 4
    joint = tool.scan_backward_transient_bytes(B, T, H, D, 2)
    seq = tool.scan_backward_transient_bytes(B, T, H, D, 2, sequential=True)
    assert joint - seq == states(64) + qbar  # the default backward chunk at head dim 64
    joint32 = tool.scan_backward_transient_bytes(B, T, H, D, 2, chunk=32)
    assert joint32 - tool.scan_backward_transient_bytes(B, T, H, D, 2, chunk=32, sequential=True) == states(32)
    assert joint32 - joint == 2 * (states(32) - states(64) - qbar)
    assert tool.scan_backward_transient_bytes(B, T, H, D, 1, sequential=True) == \
        tool.scan_backward_transient_bytes(B, T, H, D, 1)


def test_selective_recompute_keeps_the_block_input_and_the_scan_outputs():
    """The tool's count of a selectively recomputed GKA block: its bf16 input and the scan op's outputs (o in q's
    dtype, x [2, B, T, H, D] and ||H_t||_F [2, B, T, H] fp32), nothing else; the predicted peak adds the largest
    recomputed region."""
    x = torch.randn(2, 3, 32, 32)

    def vit(setting):  # backend 'auto': the tool's stand-in of the Triton kernels
        torch.manual_seed(0)
        return GKAViT(img_size=32, patch_size=8, embed_dim=C, depth=2, num_heads=NH, num_classes=5,
                      mixer_kwargs=dict(num_iter=4, backend='auto'), selective_recompute=setting)
    base = vit(False)
    records, _ = am.count_saved(base, lambda: base(x).sum())
    model = vit(True)
    sel, _ = am.count_saved(model, lambda: model(x).sum())
    in_blocks = [r for r in sel if r['module'].startswith('blocks.')]
    inputs = [r for r in in_blocks if r['how'] == 'checkpoint input']
    kept = [r for r in in_blocks if r['how'] == 'kept (selective recompute)']
    assert len(inputs) == 2 and all(r['dtype'] == 'bfloat16' and r['shape'] == (2, 4, 4, C) for r in inputs)
    T = 16
    assert sorted((r['shape'], r['dtype']) for r in kept) == sorted(
        [((2, T, NH, C // NH), 'float32'), ((2, 2, T, NH, C // NH), 'float32'), ((2, 2, T, NH), 'float32')] * 2)
    assert len(in_blocks) == len(inputs) + len(kept)
    block_bytes = sum(r['bytes'] for r in records if r['module'].startswith('blocks.1'))
    region = max(am._region_bytes)
    # about what the block saves without the policy (a little more: inside the region the mixer's normalisation
    # and gated norm run plainly instead of through their own recompute)
    assert block_bytes < region < 1.2 * block_bytes
    res = am.measure('gka_tiny_patch16_224', img_size=64, batch=2, kwargs=dict(selective_recompute=True))
    assert res['recompute_transient_bytes'] > 0
    assert res['predicted_peak_bytes'] == sum(res[k] for k in ('saved_bytes', 'state_bytes', 'scan_transient_bytes',
                                                               'recompute_transient_bytes', 'input_bytes'))
