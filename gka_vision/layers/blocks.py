"""The residual blocks around a token mixer, on NHWC maps [B, H, W, C] (the tokens in raster order inside):

    MixerBlock  x = x + drop_path(ls1(mixer(norm1(x), (H, W))));  x = x + drop_path(ls2(mlp(norm2(x))))
    VimBlock    x = x + drop_path(mixer(norm(x), (H, W)))          Vim's layout: no MLP

Two ways to trade compute for activation memory, both non-reentrant torch.utils.checkpoint, same gradients:

- `selective_recompute` (also `set_block_selective_recompute`) reruns the whole block in the backward except its
  sequence mixing (the scan ops and fused attention, `mixer_parts.kept_ops`), whose outputs are kept with the block
  input: the projections, conv, norms, gates and MLP run twice, the scans once. None (the default) turns it on for
  token maps of at least `SELECTIVE_RECOMPUTE_MIN_TOKENS` tokens (1024: from 512 px at patch 16), where activation
  memory, not the step time, limits training; True / False force it.
- `recompute_mixer` (also `set_block_recompute`) reruns norm + mixer, scans included, keeping only the block input,
  for about one more mixer forward per step. A mixer with a `sequential_backward` switch (BidirectionalGKAMixer: its
  Triton backward then runs one scan direction at a time, half its transient memory) follows it. It replaces
  selective recomputation in the blocks where it is on.
"""
from typing import Optional, Tuple, Type

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale, Mlp, RmsNorm

from .attention import AttentionMixer
from .mixer_parts import check_selective_recompute, recompute, recompute_keeping_scans, selective_recompute_on

__all__ = ['MixerBlock', 'VimBlock', 'set_block_recompute', 'set_block_selective_recompute']


class _TokenMixerBlock(nn.Module):
    """What both blocks share: an NHWC map in and out, the token mixer (after its norm, `_mix`) on the tokens in
    raster order, recomputed in the backward when `recompute_mixer` is on, the whole block but its scans when
    selective recomputation is (see the module docstring); `_residuals` adds the branches."""

    recompute_mixer: bool
    selective_recompute: Optional[bool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._tokens(x)
        else:
            if not self.recompute_mixer and selective_recompute_on(self.selective_recompute, x.shape[1] * x.shape[2]):
                # attention blocks keep SDPA's outputs by a checkpoint policy; the others replay their scans
                return recompute_keeping_scans(self._tokens, x, replay_scans=not isinstance(self.mixer, AttentionMixer))
            return self._tokens(x)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        if self.recompute_mixer and not torch.jit.is_scripting():
            y = recompute(self._mix, x, (H, W))
        else:
            y = self._mix(x, (H, W))
        return self._residuals(x, y).reshape(B, H, W, C)


class MixerBlock(_TokenMixerBlock):
    """Pre-norm residual token mixer, then MLP, each with optional LayerScale (see the module docstring).

    Args:
        dim: token width C.
        mixer: the token mixer module (layers/create_mixer.py), called as mixer(tokens [B, N, C], (H, W)).
        mlp_ratio: MLP hidden width / dim.
        proj_drop: dropout inside the MLP.
        drop_path: stochastic depth of both branches.
        norm_layer, act_layer: norms before the branches, MLP activation.
        layer_scale: LayerScale init of both branches (None: no LayerScale).
        recompute_mixer: recompute norm1 + mixer in the backward.
        selective_recompute: recompute the block but its scans in the backward (None: from 1024 tokens).
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4., proj_drop: float = 0.,
                 drop_path: float = 0., norm_layer: Type[nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, layer_scale: Optional[float] = None,
                 recompute_mixer: bool = False, selective_recompute: Optional[bool] = None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = mixer
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        set_block_recompute(self, recompute_mixer)
        set_block_selective_recompute(self, selective_recompute)

    def _mix(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        return self.mixer(self.norm1(x), hw)

    def _residuals(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(y))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VimBlock(_TokenMixerBlock):
    """Vim's pre-norm residual block around a token mixer, without MLP (see the module docstring).

    Args:
        dim: token width C.
        mixer: the token mixer module, called as mixer(tokens [B, N, C], (H, W)).
        drop_path: stochastic depth.
        norm_layer: the norm before the mixer (Vim: RMSNorm).
        recompute_mixer: recompute norm + mixer in the backward.
        selective_recompute: recompute the block but its scans in the backward (None: from 1024 tokens).
    """

    def __init__(self, dim: int, mixer: nn.Module, drop_path: float = 0., norm_layer: Type[nn.Module] = RmsNorm,
                 recompute_mixer: bool = False, selective_recompute: Optional[bool] = None):
        super().__init__()
        self.norm = norm_layer(dim)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        set_block_recompute(self, recompute_mixer)
        set_block_selective_recompute(self, selective_recompute)

    def _mix(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        return self.mixer(self.norm(x), hw)

    def _residuals(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(y)


def set_block_recompute(module: nn.Module, enable: bool = True) -> int:
    """Switch `recompute_mixer` of every MixerBlock / VimBlock in `module` (module itself included), and the
    `sequential_backward` of their mixers that have one. Returns the number of blocks switched."""
    blocks = [m for m in module.modules() if isinstance(m, (MixerBlock, VimBlock))]
    for block in blocks:
        block.recompute_mixer = enable
        if hasattr(block.mixer, 'sequential_backward'):
            block.mixer.sequential_backward = enable
    return len(blocks)


def set_block_selective_recompute(module: nn.Module, setting: Optional[bool] = True) -> int:
    """Set `selective_recompute` (True, False, or None: from SELECTIVE_RECOMPUTE_MIN_TOKENS tokens) of every
    MixerBlock / VimBlock in `module` (module itself included), and of their mixers that have the attribute (they
    skip their own recomputation of elementwise chains inside a selectively recomputed block). Returns the number
    of blocks set."""
    check_selective_recompute('set_block_selective_recompute', setting)
    blocks = [m for m in module.modules() if isinstance(m, (MixerBlock, VimBlock))]
    for block in blocks:
        block.selective_recompute = setting
        if hasattr(block.mixer, 'selective_recompute'):
            block.mixer.selective_recompute = setting
    return len(blocks)
