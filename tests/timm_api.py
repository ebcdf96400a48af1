"""Helpers and timm-API checks shared by the model-family tests (gka_vit, mamba_vim, mambavision/gkavision) and
their mixers' tests."""
import math
import timm
import torch


def create(name, tiny, seed=0, **kwargs):
    """timm.create_model with the family's tiny CPU overrides and a fixed init seed."""
    torch.manual_seed(seed)
    return timm.create_model(name, **dict(tiny, **kwargs))


def load(name, path, tiny, seed=0, **kwargs):
    """The same model loaded through timm's pretrained path from a local file."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **dict(tiny, **kwargs))


def images(b=2, h=64, w=64, c=3, seed=1):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def check_default_cfg_and_head(model, output_fmt, pool_size):
    """default_cfg fields, forward_features / forward_head / reset_classifier of a model whose unpooled
    features are `output_fmt` ('NHWC' for the isotropic families, 'NCHW' for the hierarchical one)."""
    model.eval()
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == pool_size
    sd = model.state_dict()
    assert cfg['first_conv'] + '.weight' in sd and cfg['classifier'] + '.weight' in sd
    assert model.output_fmt == output_fmt
    unpooled = (1, *pool_size, model.num_features) if output_fmt == 'NHWC' else (1, model.num_features, *pool_size)
    x = images(1, *cfg['input_size'][1:])
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == unpooled
        assert model.forward_head(feat, pre_logits=True).shape == (1, model.head_hidden_size)
        assert model(x).shape == (1, cfg['num_classes'])
        assert model.get_classifier() is model.head
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, '')
        assert model(x).shape == unpooled
        model.reset_classifier(7, 'avg')
        assert model(x).shape == (1, 7)


def check_grad_checkpointing_identical(make_model, x, grad_atol):
    """set_grad_checkpointing changes neither the output nor (beyond round-off) the gradients."""
    results = []
    for ckpt in (False, True):
        model = make_model().train()
        model.set_grad_checkpointing(ckpt)
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out0, g0), (out1, g1) = results
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=grad_atol, msg=n)


def meta_model(name, **kwargs):
    """The model built on the meta device (no memory, no init): for parameter counts and structure."""
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def check_param_count(model, target, what):
    """The model's parameter count is within 10 % of `target` (what: the name in the failure message)."""
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - target) <= 0.1 * target, f'{what}: {n / 1e6:.2f}M params, target {target / 1e6:.1f}M'


def check_grads(module, nonzero=False):
    """Every parameter of `module` has a finite gradient (with nonzero: not all zero); a failure names it."""
    for pname, p in module.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if nonzero:
            assert p.grad.abs().sum() > 0, pname


def check_mixer_backward(mixer, x, hw):
    """mixer(x, hw).square().mean() backpropagates a finite gradient to x and a finite, nonzero one to every
    parameter of the mixer."""
    x.requires_grad_()
    mixer(x, hw).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    check_grads(mixer, nonzero=True)


def check_load_adapts_head_and_size(model, load, width):
    """A tiny isotropic model at 64 px (pos_embed [1, 4, 4, width]) whose weights load(**overrides) loads through
    timm's pretrained path: num_classes=5 gives a 5-class head on unchanged features; img_size=96 gives a 6x6
    pos_embed, the bicubic resize the 64 px model applies on the fly to a 96 px input, so the same output."""
    x, x96 = images(), images(2, 96, 96)
    five = load(num_classes=5).eval()
    assert five.head.weight.shape == (5, width)
    big = load(img_size=96).eval()
    assert big.pos_embed.shape == (1, 6, 6, width)
    with torch.no_grad():
        torch.testing.assert_close(five.forward_features(x), model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(big(x96), model(x96), rtol=1e-5, atol=1e-5)


def check_intermediates_match_features(model, x, shapes, early):
    """Eval, no grad: forward_intermediates(x) ends in forward_features(x) and gives maps of `shapes`; stop_early at
    index `early` gives that map again; grad checkpointing (switched on, then off) keeps the final output.
    Returns (features, intermediates)."""
    model.eval()
    with torch.no_grad():
        feat = model.forward_features(x)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, feat)
        assert [tuple(t.shape) for t in inter] == shapes
        first = model.forward_intermediates(x, indices=[early], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(first[0], inter[early])
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], feat)
        model.set_grad_checkpointing(False)
    return feat, inter


def check_cuda_train_step(name):
    """One bf16-autocast training step of the model on CUDA at 224 px (the scan backend 'auto'): the output
    and every parameter gradient exist and are finite. Returns (model, x) for further checks."""
    model = timm.create_model(name, num_classes=10).cuda().train()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = model(x)
    out.float().mean().backward()
    assert torch.isfinite(out.float()).all()
    check_grads(model)
    return model, x


# ---------------------------------------------------------------- generic per-model checks (tests/models/test_timm_conformance.py)
# Written from what timm's own tests/test_models.py checks for every architecture it ships; each takes the
# model (or a factory for it) and an input, and derives its expectations from the model's own metadata
# (default_cfg, feature_info, output_fmt, num_features).

def spatial_dims(fmt):
    """(channel axis, (H axis, W axis)) of a 4-D tensor in format fmt ('NCHW' or 'NHWC')."""
    return (1, (2, 3)) if fmt == 'NCHW' else (3, (1, 2))


def check_forward(model, x):
    """Eval forward: one finite row of logits per image; grad checkpointing leaves the output unchanged."""
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (x.shape[0], model.num_classes) and torch.isfinite(out).all()
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)
        model.set_grad_checkpointing(False)
    return out


def check_backward(model, x, num_classes):
    """Train-mode forward + backward: every parameter gets a gradient, all finite."""
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_classes) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'
    assert sum(p.grad.numel() for p in model.parameters()) == sum(p.numel() for p in model.parameters())
    check_grads(model)


def check_default_cfg(make, size=None):
    """default_cfg fields and the head API: num_classes / num_features / head_hidden_size, forward_features
    unpooled, forward_head(pre_logits), reset_classifier(0) and (0, ''), num_classes=0 + global_pool='' at
    construction, classifier and first_conv names. pool_size is the cfg's input size over the last feature
    reduction, and forward_features gives that map at the cfg's input size; with `size` set, the forward
    passes run at size x size instead (the map is size / reduction), for CPU time."""
    model = make().eval()
    cfg = model.default_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    fmt = getattr(model, 'output_fmt', 'NCHW')
    ch, (h, w) = spatial_dims(fmt)
    reduction = model.feature_info[-1]['reduction']
    assert tuple(cfg['pool_size']) == tuple(s // reduction for s in cfg['input_size'][1:])
    hw = tuple(cfg['input_size'][1:]) if size is None else (size, size)
    x = images(1, *hw, c=cfg['input_size'][0])
    sd = model.state_dict()
    for name in (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']:
        assert name + '.weight' in sd, name
    for name in (cfg['first_conv'],) if isinstance(cfg['first_conv'], str) else cfg['first_conv']:
        assert name + '.weight' in sd, name
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.ndim == 4 and (feat.shape[h], feat.shape[w]) == tuple(s // reduction for s in hw)
        assert feat.shape[ch] == model.num_features
        pre = model.forward_head(feat, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.shape == pre.shape
        model.reset_classifier(0, '')
        assert model(x).shape == feat.shape
    bare = make(num_classes=0, global_pool='').eval()
    with torch.no_grad():
        assert bare(x).shape == feat.shape


def check_features_only(make, x, **kwargs):
    """features_only=True (the model's default feature class, or kwargs): at least 3 levels by default, each
    output matching feature_info's channels and reduction in the wrapper's output format."""
    model = make(features_only=True, **kwargs).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    if 'out_indices' not in kwargs:
        assert len(channels) >= 3
    fmt = getattr(model, 'output_fmt', 'NCHW')
    fmt = getattr(fmt, 'value', fmt)
    ch, (h, w) = spatial_dims(fmt)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape[0] == x.shape[0] and o.shape[ch] == c
        assert o.shape[h] <= math.ceil(x.shape[2] / r) + 1 and o.shape[w] <= math.ceil(x.shape[3] / r) + 1
        assert torch.isfinite(o).all()
    return model, outs


def check_forward_intermediates(model, x):
    """forward_intermediates: one NCHW map per feature_info entry, the final output equal to forward_features
    (also with grad checkpointing), intermediates_only / stop_early consistent with the full pass."""
    model.eval()
    info = timm.models.FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt='NCHW')
        assert len(inter) == len(info.channels()) >= 3
        for c, r, o in zip(info.channels(), info.reduction(), inter):
            assert o.shape[:2] == (x.shape[0], c)
            assert o.shape[2] <= math.ceil(x.shape[2] / r) + 1 and o.shape[3] <= math.ceil(x.shape[3] / r) + 1
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[1], rtol=0, atol=0)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)
        model.set_grad_checkpointing(False)


def fx_extractor(model, train=False):
    """torchvision's create_feature_extractor with timm's FX leaf lists (timm's own FX test harness): the
    graph's final output node, in eval and in train mode."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs).train(train)


def check_fx_forward(model, x):
    """The FX-traced model (timm's harness, and plain torch.fx.symbolic_trace) gives exactly the eager output."""
    model.eval()
    with torch.no_grad():
        eager = model(x)
        fx_out = list(fx_extractor(model)(x).values())
        assert len(fx_out) == 1 and torch.equal(fx_out[0], eager)
        assert torch.equal(torch.fx.symbolic_trace(model)(x), eager)


def check_fx_backward(model, x, num_classes):
    """The FX-traced model in train mode: the output and a gradient for every parameter."""
    gm = fx_extractor(model.train(), train=True)
    out = list(gm(x).values())
    assert len(out) == 1 and out[0].shape == (x.shape[0], num_classes)
    out[0].mean().backward()
    missing = [n for n, p in gm.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'
    assert sum(p.grad.numel() for p in gm.parameters()) == sum(p.numel() for p in gm.parameters())


def check_fx_features(make, x):
    """features_only=True, feature_cls='fx' (timm's FeatureGraphNet): the same maps as the model's default
    feature extractor, in the FX wrapper's own output format."""
    _, ref = check_features_only(make, x)
    fx_model, outs = check_features_only(make, x, feature_cls='fx')
    fmt = getattr(fx_model.output_fmt, 'value', fx_model.output_fmt)
    for r, o in zip(ref, outs):
        torch.testing.assert_close(o.permute(0, 3, 1, 2) if fmt == 'NHWC' else o, r, rtol=1e-5, atol=1e-5)


def check_set_input_size_roundtrip(model, created_with, resize, x, folder):
    """set_input_size(**resize) then timm's save_for_hf + create_model('local-dir:...') rebuild the resized
    model: the same state dict and exactly the same output on x (at the new size). Returns the restored model.
    created_with: the create_model kwargs of `model` (older timm records no model args itself)."""
    from timm.models import save_for_hf
    model.eval().set_input_size(**resize)
    with torch.no_grad():
        out = model(x)
    try:
        from timm.models import get_model_args  # noqa: F401  (timm >= 1.0.31 writes the model args itself)
        extra = {}
    except ImportError:
        extra = dict(model_args=dict(created_with, **model._model_args))
    save_for_hf(model, folder, **extra)
    restored = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    sd, rsd = model.state_dict(), restored.state_dict()
    assert rsd.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(rsd[k], v), k
    with torch.no_grad():
        assert torch.equal(restored(x), out)
    return restored


def check_torchscript(make, x):
    """torch.jit.script of the model built under timm's set_scriptable(True) (timm's TorchScript test) runs
    and matches the eager output. The scans are Python calls inside it (torch.jit.ignore: Python autograd
    Functions / Triton), so a scripted model cannot be torch.jit.save'd: that fails with TorchScript's own
    'Could not export Python function call' error (use torch.export or the dynamo ONNX exporter to serialize)."""
    import io
    import pytest
    with timm.set_scriptable(True):
        model = make().eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
        assert out.shape == (x.shape[0], model.num_classes) and torch.isfinite(out).all()
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match='Could not export Python function call'):
        torch.jit.save(scripted, io.BytesIO())


def check_meta_structure(make, x_shape=(1, 3, 224, 224)):
    """timm's structure contract on the meta device (no memory): create_model(device=, dtype=) puts every
    parameter and buffer there; forward runs on meta tensors and follows a dtype change; reset_classifier
    builds the new head on the model's device / dtype / train mode; a frozen model stays frozen through
    reset_classifier and set_input_size; unknown constructor args raise TypeError; group_matcher splits the
    parameters and every no_weight_decay entry names one."""
    import fnmatch
    import pytest
    from timm.models._manipulate import group_parameters
    model = make(device='meta', dtype=torch.float32).eval()
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != 'meta']
    assert not misplaced, misplaced[:5]
    x = torch.randn(x_shape, device='meta')
    assert model(x).shape == (x_shape[0], model.num_classes)
    model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.to(device='meta', dtype=torch.float64)
    model.reset_classifier(0)
    model.reset_classifier(2)
    head = list(model.get_classifier().parameters())
    assert head and all(p.device.type == 'meta' and p.dtype == torch.float64 for p in head)
    assert all(not m.training for m in model.modules())
    frozen = make(device='meta').requires_grad_(False)
    frozen.reset_classifier(0)
    frozen.reset_classifier(0, '')
    frozen.set_input_size(img_size=(448, 448))
    assert not [n for n, p in frozen.named_parameters() if p.requires_grad]
    with pytest.raises(TypeError):
        make(device='meta', not_a_model_arg=1)
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    names = [n for n, _ in model.named_parameters()]
    for pattern in model.no_weight_decay():
        assert any(fnmatch.fnmatch(n, pattern) for n in names), pattern


def check_bf16_autocast_step(model, x):
    """A CPU bf16-autocast forward and backward of `model` (train mode): finite output, and a finite gradient for
    every parameter."""
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    assert torch.isfinite(out.float()).all()
    out.float().mean().backward()
    check_grads(model)
    return out
