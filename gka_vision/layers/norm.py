"""Normalisation layers shared by the GKA models."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim, scaled by a learned weight and gated by SiLU(gate).

    y = x / sqrt(mean(x^2) + eps) * weight * silu(gate), computed in fp32 and cast back to x's dtype
    (gate=None: no gate, a plain RMSNorm).
    Applied per head (normalized_shape = head dim), as the GKA reference's output norm (docs/gka_spec.md section 1).
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = x * self.weight.float()
        if gate is not None:
            x = x * F.silu(gate.float())
        return x.to(dtype)

    def extra_repr(self) -> str:
        return f'{self.normalized_shape}, eps={self.eps}'
