"""GKAVision, the GKA paper's ImageNet model, and the hierarchical hybrid backbone it shares with MambaVision.

    image -> stem: 2 x (conv3x3 stride 2 + BN + ReLU)                      stride 4, in_dim -> dim
          -> stage 0: conv residual blocks                                 dim,   stride 4
          -> stage 1: conv3x3 s2 downsample + conv residual blocks         2 dim, stride 8
          -> stage 2: downsample + windowed [mixer blocks, then attention blocks]   4 dim, stride 16
          -> stage 3: downsample + windowed [mixer blocks, then attention blocks]   8 dim, stride 32
          -> BatchNorm -> global average pool -> linear head

In stages 2-3 the map is cut into windows (14x14 and 7x7 for the tiny size, i.e. the whole map at 224); every
block of the stage works inside the windows, raster order within a window. The first half of the blocks use the
token mixer named by `mixer` (layers/create_mixer.py, with its own options in `mixer_kwargs`), the second half
multi-head self-attention (odd depth: one more mixer block). Each of those blocks is
x + drop_path(mixer(LN(x))); x + drop_path(MLP(LN(x))) (layers/blocks.py, MixerBlock).

``mixer='gka'`` gives GKAVision (GKAVisionMixer: MambaVision's mixer with one causal GKA scan on half the channels
instead of S6), as the paper "replaces the mixer blocks of MambaVision with GKA layers" at MambaVision-T's 31.8M
parameters (docs/design.md, "GKAVision's mixer"). The mixer's scan heads have a power-of-two dim, which fills the
Triton kernels' tiles: 32 in gkavision_tiny and gkavision_small (their stages' C / num_heads, 40 and 48, would be
padded to 64 inside the kernels) and C / num_heads = 64 in gkavision_base; ``gka_head_dim`` (the mixer's head_dim)
sets another (``gka_head_dim=40`` in gkavision_tiny: C / num_heads; docs/design.md, "Heads"). ``mixer='gka_bi'``
uses BidirectionalGKAMixer (all channels, both scan directions) instead; ``mixer='mamba'`` (MambaVisionMixer, Mamba-1
selective scan) is MambaVision, the baseline family registered in mambavision.py. Widths and depths are
MambaVision-T/S/B's.
Reported (ImageNet-1K, 224px): GKAVision-T 81.27 top-1 (GKA paper, arXiv 2511.21016).

Written from the MambaVision paper's description (arXiv 2407.08083), not from its code. Differences: a window
larger than the map shrinks to the map (MambaVision pads it); downsampling sits at the start of stages 1-3 instead
of the end of stages 0-2 (same layers, cleaner feature taps).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, register_notrace_function, to_2tuple
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import MixerBlock, create_mixer, get_mixer, pop_mixer_options
from ..layers.input_checks import check_image
from ..layers.mixer_parts import init_linear_weights
from ..layers.norm import AutocastLayerNorm
from ._checkpoint import adapt_state_dict, strip_wrapper_prefixes, unwrap_state_dict
from ._factory import accepts_device_dtype, like
from ._model_api import check_global_pool, no_weight_decay_names, switch_recompute, switch_selective_recompute
from ._resize import record_input_size

__all__ = ['GKAVision', 'ConvBlock', 'ConvStage', 'HybridStage', 'checkpoint_filter_fn', 'create_gkavision']


class ConvBlock(nn.Module):
    """x + drop_path(BN(conv3x3(GELU(BN(conv3x3(x)))))), NCHW."""

    def __init__(self, dim: int, drop_path: float = 0., layer_scale: Optional[float] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act = nn.GELU(approximate='tanh')
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """[B, C, H, W] (H, W multiples of wh, ww) -> [B * nW, wh * ww, C], raster order inside a window."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // wh, wh, W // ww, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, wh * ww, C)


def window_reverse(x: torch.Tensor, wh: int, ww: int, H: int, W: int) -> torch.Tensor:
    """Inverse of window_partition: [B * nW, wh * ww, C] -> [B, C, H, W]."""
    C = x.shape[-1]
    x = x.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(-1, C, H, W)


@register_notrace_function  # FX leaf: the window size and padding depend on the map size
def windows_of(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """[B, C, H, W] -> windows [B * nW, wh, ww, C] (NHWC, the blocks' layout) of window_size, shrunk to the map when
    it is smaller; the map is zero-padded at the bottom / right to a multiple of the window."""
    H, W = x.shape[-2:]
    wh, ww = min(window_size, H), min(window_size, W)
    pad_b, pad_r = (-H) % wh, (-W) % ww
    if pad_b or pad_r:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    return window_partition(x, wh, ww).view(-1, wh, ww, x.shape[1])


@register_notrace_function  # FX leaf: the padding to remove depends on the map size
def map_of(t: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Inverse of windows_of: windows [B * nW, wh, ww, C] -> the [B, C, H, W] map, padding removed."""
    wh, ww, C = t.shape[1], t.shape[2], t.shape[3]
    Hp, Wp = H + (-H) % wh, W + (-W) % ww
    x = window_reverse(t.reshape(-1, wh * ww, C), wh, ww, Hp, Wp)
    return x[:, :, :H, :W].contiguous() if (Hp, Wp) != (H, W) else x


torch.fx.wrap('windows_of')
torch.fx.wrap('map_of')
torch.fx.wrap('check_image')


class ConvStage(nn.Module):
    """Optional stride-2 downsample, then conv residual blocks (stages 0-1)."""

    def __init__(self, in_dim: int, dim: int, depth: int, drop_path: Sequence[float] = (),
                 layer_scale_conv: Optional[float] = None, window_size: int = 0):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1, bias=False) if in_dim != dim \
            else nn.Identity()
        self.window_size = window_size  # unused here: the model's per-stage window list, of which 2-3 apply
        self.grad_checkpointing = False
        dp = list(drop_path) or [0.] * depth
        self.blocks = nn.Sequential(*[ConvBlock(dim, dp[i], layer_scale_conv) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class HybridStage(nn.Module):
    """Optional stride-2 downsample, then windowed mixer blocks followed by attention blocks (stages 2-3).

    mixer, mixer_kwargs: the token mixer of the first half of the blocks and its own options
    (layers/create_mixer.py); the other blocks use self-attention ('attn').
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int, mixer: str = 'gka',
                 mixer_kwargs: Optional[Dict[str, Any]] = None, mlp_ratio: float = 4., drop_path: Sequence[float] = (),
                 proj_drop: float = 0., layer_scale: Optional[float] = None, recompute_mixer: bool = False,
                 selective_recompute: Optional[bool] = None, fuse_norm: bool = True):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1, bias=False) if in_dim != dim \
            else nn.Identity()
        self.window_size = window_size
        self.grad_checkpointing = False
        dp = list(drop_path) or [0.] * depth
        n_mixer = depth - depth // 2  # odd depth: one more mixer block than attention blocks
        blocks = []
        for i in range(depth):
            if i < n_mixer:
                token_mixer = create_mixer(mixer, dim, num_heads, proj_drop=proj_drop, **(mixer_kwargs or {}))
            else:
                token_mixer = create_mixer('attn', dim, num_heads, proj_drop=proj_drop)
            blocks.append(MixerBlock(
                dim, token_mixer, mlp_ratio=mlp_ratio, proj_drop=proj_drop, drop_path=dp[i],
                norm_layer=partial(AutocastLayerNorm, eps=1e-5, fused=fuse_norm), layer_scale=layer_scale,
                recompute_mixer=recompute_mixer, selective_recompute=selective_recompute))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        H, W = x.shape[-2], x.shape[-1]
        t = windows_of(x, self.window_size)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                t = torch.utils.checkpoint.checkpoint(blk, t, use_reentrant=False)
            else:
                t = blk(t)
        return map_of(t, H, W)


class GKAVision(nn.Module):
    """Hierarchical hybrid backbone with the token mixer of stages 2-3 chosen by name (see the module docstring).

    Args:
        in_chans, num_classes: input channels, classifier width (0: no classifier).
        global_pool: 'avg' or '' (forward returns the NCHW map).
        dim: width of stage 0 (doubles at each stage); in_dim: width after the first stem conv.
        depths, num_heads, window_size: per stage (heads and windows are used by stages 2-3 only).
        mixer: the token mixer of the first half of the blocks of stages 2-3, a name of layers/create_mixer.py:
            'gka' (GKAVisionMixer), 'gka_bi' (BidirectionalGKAMixer), 'mamba' (MambaVisionMixer), ...
        mixer_kwargs: the mixer's own options (e.g. ridge_ratio, num_iter, head_dim, backend for 'gka'; d_state,
            d_conv, expand, backend for 'mamba'); an unknown one is a TypeError naming it. timm.create_model also
            takes them flat (`create_model('gkavision_tiny', num_iter=10, gka_head_dim=64)`).
        mlp_ratio, drop_rate (before the head), proj_drop_rate, drop_path_rate (linear over all blocks).
        layer_scale, layer_scale_conv: LayerScale init of mixer/attention blocks and conv blocks (None: off).
        recompute_mixer: recompute norm1 + token mixer of every mixer/attention block in the backward
            (non-reentrant torch.utils.checkpoint), keeping only the block input; also `set_recompute_mixer`.
            The bidirectional GKA mixer then also runs its Triton backward one scan direction at a time (half its
            transient memory).
        selective_recompute: recompute every mixer/attention block but its scan or attention in the backward,
            keeping the block input and the scan's (attention's) outputs; also `set_selective_recompute`. None (the
            default): on for blocks that see at least 1024 tokens, i.e. never at the default window sizes (the
            blocks see windows of at most 14 x 14 tokens); True / False force it. Same gradients.
        fuse_norm: the mixer/attention blocks' LayerNorms (AutocastLayerNorm, layers/norm.py: the autocast dtype out)
            run as one Triton kernel each way in eager mode on CUDA for inputs of at least 2^24 elements
            (AutocastLayerNorm's fused_min_numel) (False: always the PyTorch op, then the rounding).
        device, dtype: timm's factory kwargs (every parameter created on that device, in that dtype).
        img_size: the nominal input size (recorded for preprocessing and `set_input_size`; the network takes
            any size: windows larger than a stage's map shrink to it, others pad the map).
    """

    @accepts_device_dtype
    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            dim: int = 80,
            in_dim: int = 32,
            depths: Sequence[int] = (1, 3, 8, 4),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            window_size: Sequence[int] = (8, 8, 14, 7),
            mixer: str = 'gka',
            mixer_kwargs: Optional[Dict[str, Any]] = None,
            mlp_ratio: float = 4.,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale: Optional[float] = None,
            layer_scale_conv: Optional[float] = None,
            recompute_mixer: bool = False,
            selective_recompute: Optional[bool] = None,
            img_size: Union[int, Tuple[int, int]] = 224,
            fuse_norm: bool = True,
    ):
        super().__init__()
        check_global_pool(global_pool)
        get_mixer(mixer)
        if not (len(depths) == len(num_heads) == len(window_size) == 4):
            raise ValueError(f'depths, num_heads and window_size need 4 entries each, got {depths}, '
                             f'{num_heads}, {window_size}')
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = to_2tuple(img_size)
        self.output_fmt = 'NCHW'
        widths = [dim * 2 ** i for i in range(4)]
        self.num_features = self.head_hidden_size = widths[-1]

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(),
        )
        dpr = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]  # linear rule
        stages, self.feature_info, prev = [], [], dim
        for i in range(4):
            dp = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            if i < 2:
                stages.append(ConvStage(prev, widths[i], depths[i], drop_path=dp, layer_scale_conv=layer_scale_conv,
                                        window_size=window_size[i]))
            else:
                stages.append(HybridStage(
                    prev, widths[i], depths[i], num_heads=num_heads[i], window_size=window_size[i], mixer=mixer,
                    mixer_kwargs=mixer_kwargs, mlp_ratio=mlp_ratio, drop_path=dp, proj_drop=proj_drop_rate,
                    layer_scale=layer_scale, recompute_mixer=recompute_mixer,
                    selective_recompute=selective_recompute, fuse_norm=fuse_norm))
            self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2 ** i, module=f'stages.{i}'))
            prev = widths[i]
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        init_linear_weights(self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Full names of parameters that must not be weight-decayed (the mixers' scan gates: A_log, dt_bias, D)."""
        return no_weight_decay_names(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def set_recompute_mixer(self, enable: bool = True):
        """Recompute norm1 + token mixer of every mixer and attention block in the backward (see the class
        docstring); the conv stages have none."""
        switch_recompute(self, enable)

    @torch.jit.ignore
    def set_selective_recompute(self, setting: Optional[bool] = True):
        """Recompute every mixer and attention block but its scan or attention in the backward: True, False, or
        None (for blocks of at least 1024 tokens; see the class docstring)."""
        switch_selective_recompute(self, setting)

    @torch.jit.ignore
    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            window_size: Optional[Union[int, Sequence[int]]] = None,
    ) -> None:
        """Change the nominal input size and/or the windows of stages 2-3 in place (timm's `set_input_size`).

        No weight depends on the input size here (any size runs: windows larger than a stage's map shrink to
        it, others pad the map), so img_size is bookkeeping (recorded for preprocessing and for
        `timm.models.save_for_hf` + `local-dir:`); window_size (one int, or 4 per-stage values of which stages
        2-3 are used) changes which tokens a mixer/attention block sees, and is recorded too. Windows are
        kept by default: at 224 px MambaVision-T's windows (14, 7) cover the whole map of stages 2-3, at 448 px
        each such map is split into 4 windows.
        """
        if window_size is not None:
            ws = (window_size,) * 4 if isinstance(window_size, int) else tuple(int(w) for w in window_size)
            if len(ws) != 4 or any(w < 1 for w in ws):
                raise ValueError(f'window_size must be a positive int or 4 positive ints, got {window_size!r}')
            for stage, w in zip(self.stages, ws):
                stage.window_size = w
            window_size = ws
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        record_input_size(self, self.img_size, window_size=window_size)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.head = nn.Linear(self.num_features, num_classes, **like(self.stem[0].weight)).train(self.training) \
            if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward returning stage outputs (NCHW). indices: last n stages if int, all if None, else a list.
        norm applies the final BatchNorm to the last stage's output only (the other widths differ)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        x = check_image(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, 8 dim, H/32, W/32] after the final BatchNorm."""
        x = check_image(x, self.in_chans)
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to `model` (see `adapt_state_dict`); this family has no position embedding. Weights whose
    GKA scan heads differ from the model's (gkavision_tiny/small saved before their heads of 32) fail with the
    gka_head_dim that builds them."""
    try:
        return adapt_state_dict(state_dict, model, first_conv='stem.0')
    except ValueError as e:
        hint = _scan_heads_hint(unwrap_state_dict(state_dict), model)
        if hint:
            raise ValueError(f'{e} {hint}') from None
        raise


def _scan_heads_hint(state_dict: Dict[str, Any], model: nn.Module) -> str:
    """'' or how to build the model with the checkpoint's scan heads (one A_log entry per head)."""
    keys = {strip_wrapper_prefixes(k): v for k, v in state_dict.items()}
    for name, m in model.named_modules():
        saved = keys.get(f'{name}.A_log')
        if type(m).__name__ != 'GKAVisionMixer' or not isinstance(saved, torch.Tensor) or saved.ndim != 1:
            continue
        half = m.d_inner // 2
        if saved.numel() != m.num_heads and saved.numel() and half % saved.numel() == 0:
            return (f'The weights have {saved.numel()} scan heads of {half // saved.numel()} in {name} (the model: '
                    f'{m.num_heads} of {m.head_dim}): build the model with gka_head_dim={half // saved.numel()}.')
    return ''


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'file': None,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 1.0,
        'interpolation': 'bicubic',
        'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0',
        'classifier': 'head',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2511.21016',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'gkavision_tiny': _cfg(),
    'gkavision_small': _cfg(),
    'gkavision_base': _cfg(),
})


def create_gkavision(variant: str, pretrained: bool = False, **kwargs) -> GKAVision:
    """build_model_with_cfg for the hybrid backbone (hierarchical features: stages 0..3), for GKAVision here and
    MambaVision in mambavision.py; mixer options given flat are moved into mixer_kwargs
    (layers/create_mixer.py, pop_mixer_options)."""
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    kwargs['mixer_kwargs'] = pop_mixer_options(kwargs)
    return build_model_with_cfg(
        GKAVision, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, flatten_sequential=True),
        **kwargs,
    )


@register_model
def gkavision_tiny(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
                      mixer='gka')
    return create_gkavision('gkavision_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gkavision_small(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=96, in_dim=64, depths=(3, 3, 7, 5), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
                      mixer='gka')
    return create_gkavision('gkavision_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gkavision_base(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=128, in_dim=64, depths=(3, 3, 10, 5), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
                      layer_scale=1e-5, mixer='gka')
    return create_gkavision('gkavision_base', pretrained=pretrained, **dict(model_args, **kwargs))
