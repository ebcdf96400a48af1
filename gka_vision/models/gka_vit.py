"""Isotropic GKA backbones (ViT layout, bidirectional GKA token mixer) as timm models.

    image -> conv patch embed (16x16) + learned absolute position embedding (no class token)
          -> depth x [x + drop_path(mixer(norm(x))); x + drop_path(mlp(norm(x)))]
          -> final norm -> global average pool -> linear head

The token map stays NHWC ([B, H, W, C]) between blocks, so `forward_features` returns NHWC
(timm `output_fmt='NHWC'`, `pool_size` = grid at the default resolution). Inside a block the map
is read in raster order ([B, H*W, C]) by the mixer, which scans it both ways.

Any input resolution that is a multiple of the patch size works at run time: the position
embedding is resized bicubically on the fly. Sizes live in the entrypoints at the bottom.
"""
import logging
from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.fx
import torch.nn as nn
import torch.utils.checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, resample_patch_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

from ..layers import BidirectionalGKAMixer, PatchEmbed, resample_pos_embed
from ._checkpoint import adapt_state_dict
from ._factory import accepts_device_dtype, like
from ._resize import record_input_size

__all__ = ['GKAViT', 'GKABlock']

torch.fx.wrap('resample_pos_embed')  # an FX leaf (it compares the grid sizes; also registered with timm)

_logger = logging.getLogger(__name__)


class GKABlock(nn.Module):
    """Pre-norm residual block: bidirectional GKA mixer, then MLP. Input and output are NHWC."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_ratio: float = 4.,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            act_layer: Type[nn.Module] = nn.GELU,
            ridge_ratio: float = 0.02,
            num_iter: int = 30,
            backend: str = 'auto',
            recompute_mixer: bool = False,
    ):
        super().__init__()
        self.recompute_mixer = recompute_mixer
        self.norm1 = norm_layer(dim)
        self.mixer = BidirectionalGKAMixer(
            dim, num_heads, ridge_ratio=ridge_ratio, num_iter=num_iter, backend=backend, proj_drop=proj_drop,
            sequential_backward=recompute_mixer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)  # raster order
        if self.recompute_mixer and torch.is_grad_enabled() and not torch.jit.is_tracing() \
                and not torch.jit.is_scripting():
            # keep only the block input (already kept by norm1); norm1 + mixer rerun in the backward
            y = torch.utils.checkpoint.checkpoint(self._mix, x, (H, W), use_reentrant=False)
        else:
            y = self._mix(x, (H, W))
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)

    def _mix(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        return self.mixer(self.norm1(x), hw)


class GKAViT(nn.Module):
    """Isotropic Gated-KalmaNet vision backbone (see the module docstring for the layout).

    Args:
        img_size: default input size; sets the stored position-embedding grid (other sizes work at run time).
        patch_size: patch size of the conv stem.
        in_chans: input channels.
        num_classes: classifier width (0 for no classifier).
        global_pool: 'avg' (mean over tokens) or '' (no pooling; forward returns NHWC tokens).
        embed_dim, depth, num_heads, mlp_ratio: sizes.
        drop_rate: dropout before the classifier; pos_drop_rate: after the position embedding;
        proj_drop_rate: after the mixer output projection and inside the MLP; drop_path_rate: stochastic
        depth, linearly increasing over the blocks.
        ridge_ratio, num_iter, backend: options of the GKA scan (see BidirectionalGKAMixer).
        device, dtype: timm's factory kwargs (every parameter created on that device, in that dtype).
        recompute_mixer: recompute each block's norm1 + token mixer in the backward (non-reentrant
            torch.utils.checkpoint) and keep only the block input: the mixer's saved activations (most of
            the model's at high resolution) are not held, for about one more mixer forward per step.
            It also runs the Triton backward one scan direction at a time (half its transient memory).
            Also settable with `set_recompute_mixer`. Same gradients.
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
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Optional[Type[nn.Module]] = None,
            act_layer: Optional[Type[nn.Module]] = None,
            ridge_ratio: float = 0.02,
            num_iter: int = 30,
            backend: str = 'auto',
            recompute_mixer: bool = False,
    ):
        super().__init__()
        if global_pool not in ('', 'avg'):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        img_size = to_2tuple(img_size)
        patch_size = to_2tuple(patch_size)
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(
                f'img_size {img_size[0]}x{img_size[1]} is not divisible by the patch size '
                f'{patch_size[0]}x{patch_size[1]}')
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU

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

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear stochastic-depth rule
        self.blocks = nn.Sequential(*[
            GKABlock(
                embed_dim, num_heads, mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate, drop_path=dpr[i],
                norm_layer=norm_layer, act_layer=act_layer,
                ridge_ratio=ridge_ratio, num_iter=num_iter, backend=backend, recompute_mixer=recompute_mixer,
            )
            for i in range(depth)])
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size[0]) for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self.init_weights()

    def init_weights(self):
        trunc_normal_(self.pos_embed, std=.02)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Full names of parameters that must not be weight-decayed (also valid fnmatch patterns)."""
        skip = {'pos_embed'}
        for name, module in self.named_modules():
            if hasattr(module, 'no_weight_decay') and module is not self:
                skip.update(f'{name}.{n}' if name else n for n in module.no_weight_decay())
        return skip

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^pos_embed|patch_embed',
            blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def set_recompute_mixer(self, enable: bool = True):
        """Recompute every block's norm1 + token mixer in the backward (see the class docstring)."""
        for blk in self.blocks:
            blk.recompute_mixer = enable
            blk.mixer.sequential_backward = enable

    @torch.jit.ignore
    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            patch_size: Optional[Union[int, Tuple[int, int]]] = None,
    ) -> None:
        """Change the default input size and/or the patch size in place (timm's `set_input_size`).

        The stored position embedding is resized bicubically to the new grid (img_size / patch_size) and, for a
        new patch size, the patch-embedding kernel is resampled (timm's `resample_patch_embed`, which keeps the
        embedding of a resized patch). The change is recorded so that `timm.models.save_for_hf` + `local-dir:`
        rebuild the resized model. Inputs of any size that is a multiple of the patch keep working.
        """
        img_size = to_2tuple(img_size) if img_size is not None else self.img_size
        new_patch = to_2tuple(patch_size) if patch_size is not None else self.patch_size
        if img_size[0] % new_patch[0] or img_size[1] % new_patch[1]:
            raise ValueError(f'img_size {img_size[0]}x{img_size[1]} is not divisible by the patch size '
                             f'{new_patch[0]}x{new_patch[1]}')
        if new_patch != self.patch_size:
            old = self.patch_embed.proj
            proj = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=new_patch, stride=new_patch,
                             bias=old.bias is not None, **like(old.weight)).train(old.training)
            with torch.no_grad():
                proj.weight.copy_(resample_patch_embed(old.weight, list(new_patch), interpolation='bicubic',
                                                       antialias=True))
                if old.bias is not None:
                    proj.bias.copy_(old.bias)
            proj.requires_grad_(old.weight.requires_grad)
            self.patch_embed.proj = proj
            self.patch_embed.patch_size = self.patch_size = new_patch
            for info in self.feature_info:
                info['reduction'] = new_patch[0]
        self.img_size = img_size
        grid = self.patch_embed.feat_size(img_size)
        if grid != tuple(self.grid_size):
            self.pos_embed = nn.Parameter(resample_pos_embed(self.pos_embed.detach(), grid),
                                          requires_grad=self.pos_embed.requires_grad)
            self.grid_size = grid
        record_input_size(self, img_size, patch_size=new_patch if patch_size is not None else None)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ('', 'avg'):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes, **like(self.patch_embed.proj.weight)).train(self.training) \
            if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [B, H, W, C]; checks rank, channels and divisibility
        pos_embed = resample_pos_embed(self.pos_embed, x.shape[1:3])
        return self.pos_drop(x + pos_embed.to(x.dtype))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the outputs of selected blocks.

        Args:
            x: image batch [B, C, H, W].
            indices: last n blocks if int, all if None, else the listed block indices.
            norm: apply the final norm to every intermediate.
            stop_early: stop after the last requested block (only with intermediates_only).
            output_fmt: 'NCHW' or 'NHWC' for the intermediates.
            intermediates_only: return only the list of intermediates.
        Returns:
            (final features as forward_features returns them, intermediates), or the intermediates alone.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)

        x = self._embed(x)
        if torch.jit.is_scripting() or not stop_early:
            blocks = self.blocks
        else:
            blocks = self.blocks[:max_index + 1]
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                y = self.norm(x) if norm else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else y)

        if intermediates_only:
            return intermediates
        x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last requested index (and optionally the norm and head)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> normed tokens [B, H/p, W/p, C] (NHWC)."""
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module):
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _resize_gka_vit(k: str, v: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
    """pos_embed to the model's grid (also from a square [1, N, C] layout); the patch kernel to a new patch size."""
    if k == 'pos_embed':
        if v.ndim == 3:  # [1, N, C] with a square grid
            n = int(round(v.shape[1] ** 0.5))
            if n * n != v.shape[1]:
                raise ValueError(f"checkpoint key 'pos_embed' has shape {tuple(v.shape)}: "
                                 f"{v.shape[1]} tokens do not form a square grid")
            v = v.reshape(1, n, n, v.shape[-1])
        if v.ndim != 4 or v.shape[-1] != target.shape[-1]:
            return None  # another width: a mismatch for adapt_state_dict to report
        return resample_pos_embed(v, target.shape[1:3])
    if k == 'patch_embed.proj.weight' and v.shape[:2] == target.shape[:2] and v.shape[2:] != target.shape[2:]:
        return resample_patch_embed(v, list(target.shape[2:]), interpolation='bicubic', antialias=True)
    return None


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: GKAViT) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint saved by this project (or a wrapped training checkpoint) to `model`:
    see `adapt_state_dict`; pos_embed is resized bicubically to the model's grid and the patch-embed
    kernel resampled when the patch size differs."""
    return adapt_state_dict(state_dict, model, first_conv='patch_embed.proj', resize=_resize_gka_vit)


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
        'paper_ids': 'arXiv:2511.21016',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'gka_tiny_patch16_224': _cfg(),
    'gka_small_patch16_224': _cfg(),
    'gka_base_patch16_224': _cfg(),
})


def _create_gka_vit(variant: str, pretrained: bool = False, **kwargs) -> GKAViT:
    out_indices = kwargs.pop('out_indices', 3)
    return build_model_with_cfg(
        GKAViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


@register_model
def gka_tiny_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.5)
    return _create_gka_vit('gka_tiny_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gka_small_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.5)
    return _create_gka_vit('gka_small_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gka_base_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.5)
    return _create_gka_vit('gka_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))
