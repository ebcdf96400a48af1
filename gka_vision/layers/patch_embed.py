"""Patch embedding and absolute position embedding for isotropic (ViT-layout) GKA models.

Both keep the token map in NHWC, so the grid size travels with the tensor and raster order is
simply ``x.reshape(B, H * W, C)``.
"""
from typing import List, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import register_notrace_function, to_2tuple

from .input_checks import check_image

torch.fx.wrap('check_image')


class PatchEmbed(nn.Module):
    """Non-overlapping conv patch embedding, [B, C_in, H, W] -> [B, H/p, W/p, C] (NHWC).

    Any input resolution that is a multiple of the patch size is accepted at run time;
    anything else raises a ValueError that names the offending numbers.
    """

    def __init__(self, patch_size: Union[int, Tuple[int, int]] = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image(x, self.in_chans, self.patch_size)
        return self.proj(x).permute(0, 2, 3, 1)


@register_notrace_function  # a leaf for FX: it compares the grid sizes
def resample_pos_embed(pos_embed: torch.Tensor, new_size: List[int], antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of an NHWC position embedding [1, h, w, C] to [1, H, W, C] (in fp32, cast back)."""
    if pos_embed.shape[1] == new_size[0] and pos_embed.shape[2] == new_size[1]:
        return pos_embed
    dtype = pos_embed.dtype
    pe = pos_embed.float().permute(0, 3, 1, 2)
    pe = F.interpolate(pe, size=[new_size[0], new_size[1]], mode='bicubic', align_corners=False, antialias=antialias)
    return pe.permute(0, 2, 3, 1).to(dtype)
