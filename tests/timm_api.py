"""Helpers and timm-API checks shared by the model-family tests (gka_vit, mamba_vim, mambavision/gkavision)."""
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


def check_cuda_train_step(name):
    """One bf16-autocast training step of the model on CUDA at 224 px (the scan backend 'auto'): the output
    and every parameter gradient exist and are finite. Returns (model, x) for further checks."""
    model = timm.create_model(name, num_classes=10).cuda().train()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = model(x)
    out.float().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    return model, x
