"""Vim-style isotropic Mamba baselines (bidirectional Mamba-1, "bimamba v2") as timm models.

    image -> conv patch embed (16x16) + learned absolute position embedding (no class token)
          -> depth x [x + drop_path(BidirectionalMambaMixer(RMSNorm(x)))]          (VimBlock: no MLP, as in Vim)
          -> final RMSNorm -> global average pool -> linear head

The isotropic backbone of gka_vit.py with mixer='mamba_bi' and mlp_ratio=0, so the GKA and Mamba families are
compared on equal terms (the same stem, position embedding, timm API and checkpoint handling). Sized like
Vim-Ti/S/B (depth 24, widths 192/384/768, d_state 16, expand 2, d_conv 4). Differences from the released Vim:
mean pooling instead of a middle class token, pre-norm residual blocks instead of the fused add-norm, no RoPE
(off in the released Vim models too).
"""
from functools import partial
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import RmsNorm
from timm.models import generate_default_cfgs, register_model

from .gka_vit import GKAViT, create_gka_vit


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'file': None,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (14, 14),
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2401.09417',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'mamba_vim_tiny_patch16_224': _cfg(),
    'mamba_vim_small_patch16_224': _cfg(),
    'mamba_vim_base_patch16_224': _cfg(),
})

# Vim's block (VimBlock): the bidirectional Mamba mixer behind an RMSNorm, no MLP
_VIM_BLOCK = dict(mlp_ratio=0., mixer='mamba_bi', norm_layer=partial(RmsNorm, eps=1e-5))


@register_model
def mamba_vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(_VIM_BLOCK, patch_size=16, embed_dim=192, depth=24, mixer_kwargs=dict(d_state=16, expand=2))
    return create_gka_vit('mamba_vim_tiny_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mamba_vim_small_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(_VIM_BLOCK, patch_size=16, embed_dim=384, depth=24, mixer_kwargs=dict(d_state=16, expand=2))
    return create_gka_vit('mamba_vim_small_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mamba_vim_base_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(_VIM_BLOCK, patch_size=16, embed_dim=768, depth=24, mixer_kwargs=dict(d_state=16, expand=2))
    return create_gka_vit('mamba_vim_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))
