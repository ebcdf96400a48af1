"""The isotropic backbone (ViT layout) with its token mixer as a parameter, and the isotropic GKA models.

    image -> conv patch embed (16x16) + learned absolute position embedding (no class token)
          -> depth x block                                   the token map stays NHWC ([B, H, W, C])
          -> final norm -> global average pool -> linear head

    block = MixerBlock: x + drop_path(mixer(norm(x))); x + drop_path(mlp(norm(x)))      (mlp_ratio > 0)
            VimBlock:   x + drop_path(mixer(norm(x)))                                     (mlp_ratio = 0)

The mixer is named by `mixer` (layers/create_mixer.py) and reads the map in raster order ([B, H*W, C]); its own
options come in `mixer_kwargs`. The GKA models below use the bidirectional GKA mixer ('gka_bi') with an MLP;
the Vim baselines (mamba_vim.py) the bidirectional Mamba mixer ('mamba_bi') without, on this same backbone, so
the two families are compared on equal terms. `forward_features` returns NHWC (timm `output_fmt='NHWC'`,
`pool_size` = grid at the default resolution).

Any input resolution that is a multiple of the patch size works at run time: the position embedding is resized
bicubically on the fly. Sizes live in the entrypoints at the bottom (and in mamba_vim.py).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.fx
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_patch_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

from ..layers import MixerBlock, PatchEmbed, VimBlock, create_mixer, pop_mixer_options, resample_pos_embed
from ..layers.mixer_parts import init_linear_weights
from ..layers.norm import AutocastLayerNorm
from ._checkpoint import adapt_state_dict
from ._factory import accepts_device_dtype, like
from ._model_api import check_global_pool, no_weight_decay_names, switch_recompute, switch_selective_recompute
from ._resize import record_input_size

__all__ = ['GKAViT', 'checkpoint_filter_fn', 'create_gka_vit']

torch.fx.wrap('resample_pos_embed')  # an FX leaf (it compares the grid sizes; also registered with timm)


class GKAViT(nn.Module):
    """Isotropic vision backbone with a token mixer chosen by name (see the module docstring).

    Args:
        img_size: default input size; sets the stored position-embedding grid (other sizes work at run time).
        patch_size: patch size of the conv stem.
        in_chans: input channels.
        num_classes: classifier width (0 for no classifier).
        global_pool: 'avg' (mean over tokens) or '' (no pooling; forward returns NHWC tokens).
        embed_dim, depth: sizes; num_heads: head count of the mixers that have heads (GKA, attention).
        mlp_ratio: MLP hidden width / embed_dim of each block; 0: no MLP (Vim's block).
        mixer: the token mixer, a name of layers/create_mixer.py ('gka_bi', 'mamba_bi', 'gka', 'mamba', 'attn').
        mixer_kwargs: the mixer's own options (e.g. ridge_ratio, num_iter, backend for 'gka_bi'; d_state, d_conv,
            expand, backend for 'mamba_bi'); an unknown one is a TypeError naming it. timm.create_model also
            takes them flat (`create_model('gka_tiny_patch16_224', num_iter=10)`).
        drop_rate: dropout before the classifier; pos_drop_rate: after the position embedding;
        proj_drop_rate: after the mixer output projection and inside the MLP; drop_path_rate: stochastic
        depth, linearly increasing over the blocks.
        norm_layer: the blocks' and the final norm (default: the blocks' AutocastLayerNorm, which hands their
            matmuls the autocast dtype, layers/norm.py, and nn.LayerNorm at the end; eps 1e-6); act_layer: the
            MLP's (GELU).
        fuse_norm: the blocks' default norms run as one Triton kernel each way in eager mode on CUDA for inputs of
            at least 2^24 elements (AutocastLayerNorm's fused_min_numel) (False: always the PyTorch op, then the
            rounding to the autocast dtype; same formula).
        recompute_mixer: recompute each block's norm + token mixer in the backward (non-reentrant
            torch.utils.checkpoint) and keep only the block input: the mixer's saved activations (most of
            the model's at high resolution) are not held, for about one more mixer forward per step.
            The bidirectional GKA mixer's Triton backward then also runs one scan direction at a time (half its
            transient memory). Also settable with `set_recompute_mixer`. Same gradients.
        selective_recompute: recompute every block but its scans in the backward (non-reentrant
            torch.utils.checkpoint, layers/blocks.py): a block keeps its input and its scans' outputs, and runs its
            projections, conv, norms, gates and MLP twice. None (the default): on when the token map has at least
            1024 tokens (from 512 px at patch 16), off below, where the step time matters more than memory.
            Also settable with `set_selective_recompute`. Same gradients; `recompute_mixer` replaces it.
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
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            mixer: str = 'gka_bi',
            mixer_kwargs: Optional[Dict[str, Any]] = None,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Optional[Type[nn.Module]] = None,
            act_layer: Optional[Type[nn.Module]] = None,
            recompute_mixer: bool = False,
            selective_recompute: Optional[bool] = None,
            fuse_norm: bool = True,
    ):
        super().__init__()
        check_global_pool(global_pool)
        img_size = to_2tuple(img_size)
        patch_size = to_2tuple(patch_size)
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(
                f'img_size {img_size[0]}x{img_size[1]} is not divisible by the patch size '
                f'{patch_size[0]}x{patch_size[1]}')
        # the blocks' norms hand their matmuls the autocast dtype directly (layers/norm.py); the final norm keeps
        # nn.LayerNorm's output dtype for the pooled features
        block_norm = norm_layer or partial(AutocastLayerNorm, eps=1e-6, fused=fuse_norm)
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
        blocks = []
        for i in range(depth):
            token_mixer = create_mixer(mixer, embed_dim, num_heads, proj_drop=proj_drop_rate, **(mixer_kwargs or {}))
            if mlp_ratio > 0:
                blocks.append(MixerBlock(
                    embed_dim, token_mixer, mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate, drop_path=dpr[i],
                    norm_layer=block_norm, act_layer=act_layer, recompute_mixer=recompute_mixer,
                    selective_recompute=selective_recompute))
            else:
                blocks.append(VimBlock(embed_dim, token_mixer, drop_path=dpr[i], norm_layer=block_norm,
                                       recompute_mixer=recompute_mixer, selective_recompute=selective_recompute))
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size[0]) for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self.init_weights()

    def init_weights(self):
        trunc_normal_(self.pos_embed, std=.02)
        init_linear_weights(self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Full names of parameters that must not be weight-decayed: pos_embed and the mixers' gates."""
        return {'pos_embed'} | no_weight_decay_names(self)

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
        """Recompute every block's norm + token mixer in the backward (see the class docstring)."""
        switch_recompute(self, enable)

    @torch.jit.ignore
    def set_selective_recompute(self, setting: Optional[bool] = True):
        """Recompute every block but its scans in the backward: True, False, or None (from 1024 tokens; see the
        class docstring)."""
        switch_selective_recompute(self, setting)

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
            self.global_pool = check_global_pool(global_pool)
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


def create_gka_vit(variant: str, pretrained: bool = False, **kwargs) -> GKAViT:
    """build_model_with_cfg for the isotropic backbone (the GKA models here, the Vim baselines in mamba_vim.py);
    mixer options given flat are moved into mixer_kwargs (layers/create_mixer.py, pop_mixer_options)."""
    out_indices = kwargs.pop('out_indices', 3)
    kwargs['mixer_kwargs'] = pop_mixer_options(kwargs)
    return build_model_with_cfg(
        GKAViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


@register_model
def gka_tiny_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.5, mixer='gka_bi')
    return create_gka_vit('gka_tiny_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gka_small_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.5, mixer='gka_bi')
    return create_gka_vit('gka_small_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gka_base_patch16_224(pretrained: bool = False, **kwargs) -> GKAViT:
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.5, mixer='gka_bi')
    return create_gka_vit('gka_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))
