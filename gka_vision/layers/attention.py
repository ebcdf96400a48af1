"""Multi-head self-attention as a token mixer (the attention blocks of the hybrid's stages 2-3)."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import Attention

__all__ = ['AttentionMixer']


class AttentionMixer(nn.Module):
    """timm's multi-head self-attention (with qkv bias) over all tokens, with the mixers' call signature.

    forward(x [B, N, C], hw=None) -> [B, N, C] (hw is accepted and not needed).
    """

    def __init__(self, dim: int, num_heads: int, proj_drop: float = 0.):
        super().__init__()
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True, proj_drop=proj_drop)

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        return self.attn(x)
