"""Patch embedding and absolute position embedding for isotropic (ViT-layout) GKA models.

Both keep the token map in NHWC, so the grid size travels with the tensor and raster order is
simply ``x.reshape(B, H * W, C)``.
"""
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import to_2tuple


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

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(
                f'expected an image batch of shape [B, {self.in_chans}, H, W], got a {x.ndim}-D tensor of '
                f'shape {tuple(x.shape)}')
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f'expected {self.in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)}); '
                f'build the model with in_chans={x.shape[1]} to change it')
        H, W = x.shape[-2:]
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(
                f'input size {H}x{W} is not divisible by the patch size {ph}x{pw}; '
                f'resize or crop the image to a multiple of {ph}x{pw}')

    def feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.proj(x).permute(0, 2, 3, 1)


def resample_pos_embed(pos_embed: torch.Tensor, new_size: Tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of an NHWC position embedding [1, h, w, C] to [1, H, W, C] (in fp32, cast back)."""
    if tuple(pos_embed.shape[1:3]) == tuple(new_size):
        return pos_embed
    dtype = pos_embed.dtype
    pe = pos_embed.float().permute(0, 3, 1, 2)
    pe = F.interpolate(pe, size=tuple(new_size), mode='bicubic', align_corners=False, antialias=antialias)
    return pe.permute(0, 2, 3, 1).to(dtype)
