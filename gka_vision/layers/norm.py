"""Normalisation layers shared by the GKA models.

Both norms return their output in the autocast dtype where autocast is on (bf16 in mixed-precision training):
their consumers are matmuls (and the GKA mixer's depthwise conv), which autocast would run on that dtype anyway,
so the values they see are the same as with an fp32 output cast by each of them, without the fp32 round trip
(one more pass per consumer forward and backward). The one difference: where two consumers read the output
(the GKA mixer's conv and its small projections), autograd sums their gradients in bf16 before the norm's
backward, instead of in fp32.
"""
import functools
import os
from typing import Optional

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = ['AutocastLayerNorm', 'GatedRMSNorm', 'autocast_output_dtype', 'fused_norm_on', 'FUSED_MIN_NUMEL']

# AutocastLayerNorm's default fused_min_numel: the smallest input that runs its Triton kernel. Interleaved training
# rounds on an H200 (benchmarks/ab_train.py, docs/benchmarks.md "The blocks' LayerNorm"): at 2048 px, batch 16
# (50M elements a norm in gka_tiny) the kernel made the step 10% faster, at 1024 px, batch 16 (12.6M) no
# difference, at 224 px, batch 128 (4.8M in gka_tiny, 8.0M and 4.0M in gkavision_tiny) it was slower.
FUSED_MIN_NUMEL = 1 << 24


@register_notrace_function  # an FX leaf (timm's feature extraction and torch.fx): the dtype is known at run time
@torch.jit.ignore
def autocast_output_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype of x's device where autocast is on there, else x's dtype (also on devices without
    autocast, such as 'meta')."""
    device = x.device.type
    # torch.amp.is_autocast_available is a C builtin that Dynamo (torch 2.11) cannot trace: a graph break in every
    # norm, an error under fullgraph=True. A compiled graph's tensors are on real devices, which have autocast.
    if not torch.compiler.is_compiling() and not torch.amp.is_autocast_available(device):
        return x.dtype
    if torch.is_autocast_enabled(device) and x.is_floating_point():
        return torch.get_autocast_dtype(device)
    return x.dtype


torch.fx.wrap('autocast_output_dtype')


@functools.lru_cache(maxsize=1)
def _kernels():
    try:
        from gka_kernels import layer_norm
    except ImportError:  # no Triton here
        return None
    return layer_norm


def fused_norm_on(x) -> bool:
    """Whether a norm of x runs as one of gka_kernels' Triton kernels: in eager mode on a CUDA tensor where Triton
    imports (on the CPU under TRITON_INTERPRET=1, not under autocast, whose CPU dtype rules differ). Under
    torch.compile the PyTorch ops are traced (Inductor fuses them itself); torch.jit tracing and torch.fx symbolic
    tracing (a proxy, not a tensor) see them too."""
    if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if not x.is_cuda and (os.environ.get('TRITON_INTERPRET', '0') != '1' or torch.is_autocast_enabled(x.device.type)):
        return False
    return _kernels() is not None


class AutocastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and state dict) returning the autocast dtype under autocast.

    y = F.layer_norm(x) in fp32 (as autocast runs it), rounded to `autocast_output_dtype(x)`. In eager mode on CUDA
    one Triton kernel each way (gka_kernels.layer_norm, fp32 inside; `fused_norm_on`) for inputs of at least
    `fused_min_numel` elements. Below that the PyTorch op, then the rounding: the kernel saves memory traffic (the
    fp32 output and its cast), about 8 bytes an element each way, but its launch and autograd.Function cost more
    host time than PyTorch's op, and small steps are bound by the host (docs/benchmarks.md, section "The blocks'
    LayerNorm"). Without an affine transform (elementwise_affine=False) or with more than one normalized dim it is
    the PyTorch op, then the rounding; also with fused=False. Scripted (TorchScript): nn.LayerNorm's forward.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None, fused: bool = True, fused_min_numel: int = FUSED_MIN_NUMEL):
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine, bias=bias, device=device,
                         dtype=dtype)
        self.fused = fused
        self.fused_min_numel = fused_min_numel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return self._norm(x)

    @torch.jit.ignore
    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = autocast_output_dtype(x)
        if self.fused and self.weight is not None and self.bias is not None and len(self.normalized_shape) == 1 \
                and fused_norm_on(x) and x.numel() >= self.fused_min_numel and x.shape[-1] <= _kernels().MAX_WIDTH:
            return _kernels().layer_norm(x, self.weight, self.bias, self.eps, out_dtype)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(out_dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim, scaled by a learned weight and gated by SiLU(gate).

    y = x / sqrt(mean(x^2) + eps) * weight * silu(gate), computed in fp32 and returned in
    `autocast_output_dtype(x)` (x's dtype outside autocast; gate=None: no gate, a plain RMSNorm).
    Applied per head (normalized_shape = head dim), as the GKA reference's output norm (docs/gka_spec.md section 1).
    The mixers run it as one Triton kernel each way where their scan runs on Triton (`fuse_pointwise`).
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = x.dtype if torch.jit.is_scripting() else autocast_output_dtype(x)
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = x * self.weight.float()
        if gate is not None:
            x = x * F.silu(gate.float())
        return x.to(dtype)

    def extra_repr(self) -> str:
        return f'{self.normalized_shape}, eps={self.eps}'
