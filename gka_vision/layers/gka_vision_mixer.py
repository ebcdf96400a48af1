"""GKAVisionMixer: MambaVision's token mixer with its selective scan replaced by one causal GKA scan.

The GKA paper's ImageNet model "replaces the mixer blocks of MambaVision with GKA layers" at MambaVision-T's
size (31.8M parameters) and "without any vision-specific modifications" (../shared/notes/gka_paper_report.md):
so this mixer keeps MambaVisionMixer's shape (layers/mamba_mixer.py) -- half the channels through one causal
scan in raster order, the other half through a non-causal conv branch -- and swaps S6 for GKA
(docs/gka_spec.md sections 1-3). For tokens x [B, N, C], E = expand * C, nh heads of dim D = E / 2 / nh:

    x, z      = split(in_proj(x))                         E / 2 channels each
    x         = SiLU(conv1d_x(x) + b),  z = SiLU(conv1d_z(z))   depthwise, 'same' padding (not causal)
    q, k      = W_q x, W_k x per head, L2-normalised;  v = x per head   (S6: C, B from x; x is the value)
    beta      = sigmoid(W_b x + b_b)                      k <- beta k, v <- beta v
    alpha     = sigmoid(W_al x + b_al)
    g         = -exp(A_log) * softplus(W_a x + dt_bias)   fp32 log forget gate (docs/gka_spec.md section 1)
    y         = RMSNorm_head(gka_scan(q, k, v, alpha, g))  one causal scan
    out       = out_proj(concat(y, z))

The models pass the stage's head count; the scan runs on half the channels, and its head dim is E / num_heads (at
expand 1 the stage's attention head dim) rounded down to a power of two that divides E / 2: the Triton kernels'
tiles are powers of two, so a head dim of 40 (MambaVision-T's) would be padded to 64 inside them; GKAVision-T's scan
heads are 32 (docs/design.md, "Heads"). `head_dim` sets another.
BidirectionalGKAMixer (layers/gka_mixer.py) is the heavier alternative: all channels, both scan directions
(``mixer='gka_bi'`` in the hybrid family, models/gkavision.py).
"""
from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
from timm.layers import register_notrace_function

from ..ops import gka_scan
from .input_checks import check_tokens
from .mixer_parts import (check_kernel_config, check_solver_options, conv1d_same_silu, fused_pointwise_on, gated_norm,
                          init_A_log_uniform, init_dt_bias, log_forget_gate, normalize_qk_gate_beta,
                          normalize_qk_scale_beta)
from .norm import GatedRMSNorm

__all__ = ['GKAVisionMixer']

torch.fx.wrap('check_tokens')  # an FX leaf (it raises on shapes)


def power_of_two_head_dim(width: int, at_most: int) -> int:
    """The largest power of two that divides `width` and is at most `at_most` (1 where `at_most` < 2)."""
    d = 1
    while width % (2 * d) == 0 and 2 * d <= at_most:
        d *= 2
    return d


@register_notrace_function  # an FX leaf: timm's FX feature extraction and torch.fx keep the scan as one call
@torch.jit.ignore  # TorchScript: the scan stays a Python call (a scripted model runs; it cannot be saved)
def _scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, g: torch.Tensor,
          ridge_ratio: float, num_iter: int, backend: str, kernel_config: str) -> torch.Tensor:
    return gka_scan(q, k, v, alpha, g, ridge_ratio=ridge_ratio, num_iter=num_iter, backend=backend,
                    config=kernel_config)


torch.fx.wrap('_scan')


class GKAVisionMixer(nn.Module):
    """MambaVision-shaped mixer with one causal GKA scan on half the channels (see the module docstring).

    Args:
        dim: token width C.
        num_heads: the stage's head count; the scan's head dim is the largest power of two that is at most
            E / num_heads and divides E / 2 (for C = E = 320, num_heads = 8: 32, five heads).
        head_dim: if set, the scan's head dim instead, any divisor of E / 2 (E / 2 / head_dim heads; 40 in that
            example: four heads, which the kernels pad to 64).
        d_conv: depthwise conv width, 'same' padding (MambaVision: 3).
        expand: inner width E = expand * C, split in two halves (MambaVision: 1).
        ridge_ratio, num_iter: a in lambda_t = a ||H_t||_F and the Chebyshev steps (docs/gka_spec.md sections 1-2).
        backend: gka_scan backend ('auto', 'torch', 'triton', 'reference').
        norm_eps: eps of the per-head RMSNorm of the scan output.
        proj_drop: dropout after out_proj.
        qk_input_dtype: hand the scan q and k in their projection's dtype (bf16 under autocast) instead of
            F.normalize's (fp32 under CUDA autocast): half their loads in the Triton core and half their saved
            activations; the Fashion-MNIST check found no accuracy change (docs/results.md).
        kernel_config: the Triton kernels' tuning, a GKAKernelConfig spec string of overrides on top of the default
            for the inputs' dtype ('' = the default; e.g. 'num_warps=8'; docs/kernels.md "The kernel config").
        fuse_pointwise: where the scan runs on the Triton backend in eager mode, the q/k normalisation with the beta
            gate and the output RMSNorm run as one Triton kernel each way (mixer_parts.fused_pointwise_on); same
            arithmetic in fp32. False: the PyTorch ops (as under torch.compile, which fuses them itself).

    forward(x [B, N, C], hw=None) -> [B, N, C] (hw is accepted for the mixers' common call signature).
    """

    def __init__(self, dim: int, num_heads: int, d_conv: int = 3, expand: int = 1, ridge_ratio: float = 0.02,
                 num_iter: int = 30, backend: str = 'auto', norm_eps: float = 1e-6, proj_drop: float = 0.,
                 head_dim: Optional[int] = None, qk_input_dtype: bool = True, kernel_config: str = '',
                 fuse_pointwise: bool = True):
        super().__init__()
        check_solver_options(type(self).__name__, ridge_ratio, num_iter)
        check_kernel_config(type(self).__name__, kernel_config)
        self.dim, self.d_conv = dim, d_conv
        self.d_inner = int(expand * dim)
        if self.d_inner % 2:
            raise ValueError(f'GKAVisionMixer: expand * dim = {self.d_inner} must be even (split in two halves)')
        half = self.d_inner // 2
        if head_dim is None:
            if num_heads < 1:
                raise ValueError(f'GKAVisionMixer: num_heads must be at least 1, got {num_heads}')
            head_dim = power_of_two_head_dim(half, self.d_inner // num_heads)
        elif head_dim < 1 or half % head_dim:
            raise ValueError(f'GKAVisionMixer: half the inner width ({half}) must be divisible by head_dim '
                             f'({head_dim})')
        self.num_heads, self.head_dim = half // head_dim, head_dim
        self.ridge_ratio, self.num_iter, self.backend = ridge_ratio, num_iter, backend
        self.qk_input_dtype = qk_input_dtype
        self.kernel_config = kernel_config
        self.fuse_pointwise = fuse_pointwise

        self.in_proj = nn.Linear(dim, self.d_inner, bias=False)
        # conv1d_x has a bias (MambaVision's has none): the zero tokens that pad the windows would otherwise give
        # q = k = 0 exactly, where the L2 normalisation's gradient is 1 / eps = 1e6; through the residual stream of
        # the padded positions every GKA block multiplied their gradients by ~1e8 (1e35 after 4 blocks at 384 px).
        self.conv1d_x = nn.Conv1d(half, half, d_conv, groups=half, bias=True)
        self.conv1d_z = nn.Conv1d(half, half, d_conv, groups=half, bias=False)
        self.qk = nn.Linear(half, 2 * half, bias=False)
        # beta, alpha and the forget gate's projection as one matmul: [beta | alpha | a]
        self.gate_proj = nn.Linear(half, 3 * self.num_heads)
        self.A_log = nn.Parameter(init_A_log_uniform(self.num_heads))
        self.dt_bias = nn.Parameter(init_dt_bias(self.num_heads))
        with torch.no_grad():  # the forget gate's projection has no bias of its own (dt_bias plays that role)
            self.gate_proj.bias[2 * self.num_heads:].zero_()
        self.norm = GatedRMSNorm(self.head_dim, eps=norm_eps)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.proj_drop = nn.Dropout(proj_drop)

    @torch.jit.ignore
    def no_weight_decay(self):
        """Gate parameters that must not be weight-decayed (names relative to this module)."""
        return {'A_log', 'dt_bias'}

    @torch.jit.ignore
    def _normalize_qk(self, q, k, v, beta_logit):
        """q, k L2-normalised, k and v scaled by sigmoid(beta_logit), fused where `fused_pointwise_on`."""
        fused = fused_pointwise_on(self.fuse_pointwise, self.backend, q)
        return normalize_qk_gate_beta(q, k, v, beta_logit, self.qk_input_dtype, fused)

    @torch.jit.ignore
    def _norm(self, y):
        return gated_norm(self.norm, y, None, fused_pointwise_on(self.fuse_pointwise, self.backend, y))

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = check_tokens(x, self.dim)
        B, N, _ = x.shape
        nh, D = self.num_heads, self.head_dim
        xz = self.in_proj(x).transpose(1, 2)                                   # [B, E, N]
        xs, z = xz.chunk(2, dim=1)
        xs = conv1d_same_silu(xs, self.conv1d_x.weight, self.conv1d_x.bias).transpose(1, 2)  # [B, N, E/2]
        z = conv1d_same_silu(z, self.conv1d_z.weight)                          # [B, E/2, N]
        beta, alpha, a = self.gate_proj(xs).split(nh, dim=-1)
        q, k = self.qk(xs).view(B, N, 2, nh, D).unbind(2)
        if torch.jit.is_scripting():
            q, k, v = normalize_qk_scale_beta(q, k, xs.reshape(B, N, nh, D), torch.sigmoid(beta).unsqueeze(-1),
                                              self.qk_input_dtype)
        else:
            q, k, v = self._normalize_qk(q, k, xs.reshape(B, N, nh, D), beta)
        g = log_forget_gate(a, self.A_log, self.dt_bias)
        y = _scan(q, k, v, torch.sigmoid(alpha), g, self.ridge_ratio, self.num_iter, self.backend, self.kernel_config)
        y = (self.norm(y) if torch.jit.is_scripting() else self._norm(y)).reshape(B, N, -1)
        return self.proj_drop(self.out_proj(torch.cat([y, z.transpose(1, 2)], dim=-1)))

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, d_inner={self.d_inner}, scan_heads={self.num_heads}, head_dim={self.head_dim}, '
                f'ridge_ratio={self.ridge_ratio}, num_iter={self.num_iter}, backend={self.backend!r}'
                + (f', kernel_config={self.kernel_config!r}' if self.kernel_config else ''))
