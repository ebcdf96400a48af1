"""Vim-style isotropic Mamba baselines (bidirectional Mamba-1, "bimamba v2") as timm models.

    image -> conv patch embed (16x16) + learned absolute position embedding (no class token)
          -> depth x [x + drop_path(BidirectionalMambaMixer(RMSNorm(x)))]          (no MLP, as in Vim)
          -> final RMSNorm -> global average pool -> linear head

Sized like Vim-Ti/S/B (depth 24, widths 192/384/768, d_state 16, expand 2, d_conv 4). The layout, the
timm API and the checkpoint handling are those of the isotropic GKA models (gka_vit.py): this class
only swaps the blocks, so the two families are compared on equal terms. Differences from the released
Vim: mean pooling instead of a middle class token, pre-norm residual blocks instead of the fused
add-norm, no RoPE (off in the released Vim models too).
"""
from functools import partial
from typing import Any, Dict, Optional, Tuple, Type, Union

import torch
import torch.nn as nn

from timm.layers import DropPath, RmsNorm, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..layers import PatchEmbed
from ..layers.mamba_mixer import BidirectionalMambaMixer
from ._factory import accepts_device_dtype
from .gka_vit import GKAViT, _cfg, checkpoint_filter_fn

__all__ = ['MambaVim', 'MambaVimBlock']


class MambaVimBlock(nn.Module):
    """Pre-norm residual block around the bidirectional Mamba mixer. Input and output are NHWC."""

    def __init__(self, dim: int, drop_path: float = 0., norm_layer: Type[nn.Module] = RmsNorm,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = 'auto',
                 proj_drop: float = 0.):
        super().__init__()
        self.norm = norm_layer(dim)
        self.mixer = BidirectionalMambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand,
                                             backend=backend, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)  # raster order
        x = x + self.drop_path(self.mixer(self.norm(x), (H, W)))
        return x.reshape(B, H, W, C)


class MambaVim(GKAViT):
    """Isotropic bidirectional-Mamba backbone with the timm API of GKAViT (inherited methods).

    Args:
        img_size, patch_size, in_chans, num_classes, global_pool: as GKAViT.
        embed_dim, depth: sizes.
        d_state, d_conv, expand: Mamba-1 mixer sizes.
        drop_rate, pos_drop_rate, proj_drop_rate, drop_path_rate: as GKAViT.
        backend: selective_scan backend ('auto', 'torch', 'triton', 'mamba_ssm').
        device, dtype: timm's factory kwargs (every parameter created on that device, in that dtype).
    """

    @accepts_device_dtype
    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 192,
            depth: int = 24,
            d_state: int = 16,
            d_conv: int = 4,
            expand: int = 2,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Optional[Type[nn.Module]] = None,
            backend: str = 'auto',
    ):
        nn.Module.__init__(self)  # GKAViT's constructor builds GKA blocks; only its API methods are reused
        if global_pool not in ('', 'avg'):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        img_size, patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(f'img_size {img_size[0]}x{img_size[1]} is not divisible by the patch size '
                             f'{patch_size[0]}x{patch_size[1]}')
        norm_layer = norm_layer or partial(RmsNorm, eps=1e-5)

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.output_fmt = 'NHWC'
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.feat_size(img_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            MambaVimBlock(embed_dim, drop_path=dpr[i], norm_layer=norm_layer, d_state=d_state, d_conv=d_conv,
                          expand=expand, backend=backend, proj_drop=proj_drop_rate)
            for i in range(depth)])
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size[0]) for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        trunc_normal_(self.pos_embed, std=.02)
        for m in self.modules():
            # dt_proj keeps Mamba's step-size init (its bias is flagged _no_reinit)
            if isinstance(m, nn.Linear) and not getattr(m.bias, '_no_reinit', False):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


default_cfgs = generate_default_cfgs({
    'mamba_vim_tiny_patch16_224': _cfg(paper_ids='arXiv:2401.09417', license='apache-2.0'),
    'mamba_vim_small_patch16_224': _cfg(paper_ids='arXiv:2401.09417', license='apache-2.0'),
    'mamba_vim_base_patch16_224': _cfg(paper_ids='arXiv:2401.09417', license='apache-2.0'),
})


def _create_mamba_vim(variant: str, pretrained: bool = False, **kwargs) -> MambaVim:
    out_indices = kwargs.pop('out_indices', 3)
    return build_model_with_cfg(
        MambaVim, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


@register_model
def mamba_vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> MambaVim:
    model_args = dict(patch_size=16, embed_dim=192, depth=24, d_state=16, expand=2)
    return _create_mamba_vim('mamba_vim_tiny_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mamba_vim_small_patch16_224(pretrained: bool = False, **kwargs) -> MambaVim:
    model_args = dict(patch_size=16, embed_dim=384, depth=24, d_state=16, expand=2)
    return _create_mamba_vim('mamba_vim_small_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mamba_vim_base_patch16_224(pretrained: bool = False, **kwargs) -> MambaVim:
    model_args = dict(patch_size=16, embed_dim=768, depth=24, d_state=16, expand=2)
    return _create_mamba_vim('mamba_vim_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))
