"""Bidirectional GKA token mixer for 2D token maps (ViG-style; see docs/design.md).

One layer, for tokens x [B, N, C] in raster order over an H x W grid (docs/gka_spec.md sections 1 and 5):

    u        = SiLU(DWConv3x3(x as [B, C, H, W]))         2D locality before the projections
    q, k, v  = W_q u, W_k u, W_v u, heads of dim D        q, k L2-normalised (eps 1e-6)
    beta     = sigmoid(W_b x + b_b)                       k <- beta k, v <- beta v
    alpha    = sigmoid(W_al x + b_al)
    g_dir    = -exp(A_log_dir) * softplus(W_a_dir x + dt_bias_dir)   fp32, one gate per direction
    o        = gka_scan_bidirectional(q, k, v, alpha, g_fwd, g_bwd)  mean of both scan directions
    out      = W_o concat_heads(GatedRMSNorm(o, W_gate x))

q, k, v, beta and alpha are shared by both directions; only the forget gate is per direction.

Activation memory (docs/benchmarks.md, "Activation memory at 1024 px"): the five small projections of x
(beta, alpha, both forget gates, the output gate) run as one matmul, so autocast saves one low-precision copy
of x for them instead of five; the q/k normalisation with the beta scaling and the gated RMSNorm are
recomputed in the backward from their inputs (`recompute`, layers/mixer_parts.py; in eager mode on the Triton
backend each is one fused kernel each way that saves only its inputs, `fuse_pointwise`), so their fp32
intermediates are not kept; inside a block that recomputes all but its scans (`selective_recompute`,
layers/blocks.py, which sets this mixer's attribute of that name) they run plainly. Same arithmetic, gradients
equal up to rounding of the fused matmul.
"""
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ..ops import gka_scan_bidirectional
from .input_checks import check_tokens
from .mixer_parts import (check_kernel_config, check_solver_options, fused_pointwise_on, gated_norm, init_A_log_uniform,
                          init_dt_bias, log_forget_gate, normalize_qk_gate_beta, normalize_qk_scale_beta, recompute,
                          selective_recompute_on)
from .norm import GatedRMSNorm

__all__ = ['BidirectionalGKAMixer']

torch.fx.wrap('check_tokens')  # an FX leaf (it raises on shapes)


@register_notrace_function  # an FX leaf: timm's FX feature extraction and torch.fx keep the scan as one call
@torch.jit.ignore  # TorchScript: the scan stays a Python call (a scripted model runs; it cannot be saved)
def _scan_bidirectional(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, g: torch.Tensor,
                        g_rev: torch.Tensor, ridge_ratio: float, num_iter: int, backend: str,
                        sequential_backward: bool, kernel_config: str) -> torch.Tensor:
    return gka_scan_bidirectional(q, k, v, alpha, g, g_rev, ridge_ratio=ridge_ratio, num_iter=num_iter,
                                  backend=backend, sequential_backward=sequential_backward, config=kernel_config)


torch.fx.wrap('_scan_bidirectional')


class BidirectionalGKAMixer(nn.Module):
    """Gated KalmaNet token mixer scanning a raster-ordered token map forward and backward.

    Args:
        dim: token width C.
        num_heads: number of heads; C must be divisible by it (head dim D = C / num_heads).
        ridge_ratio: a in lambda_t = a * ||H_t||_F (docs/gka_spec.md section 1).
        num_iter: Chebyshev iterations of the ridge solve (docs/gka_spec.md section 2).
        backend: passed to gka_scan_bidirectional ('auto', 'torch', ...).
        conv_kernel_size: size of the depthwise conv giving 2D locality.
        norm_eps: eps of the per-head gated RMSNorm.
        proj_drop: dropout after the output projection.
        sequential_backward: the Triton backend's backward runs the two scan directions one after the
            other (half its transient memory, for large images); the blocks set it with their recompute_mixer
            switch (layers/blocks.py).
        qk_input_dtype: hand the scan q and k in their projection's dtype (bf16 under autocast) instead of
            F.normalize's (fp32 under CUDA autocast): half their loads in the Triton core and half their saved
            activations. Off by default here: two Fashion-MNIST checks of gka_tiny with it on came out 0.34 and
            0.16 points lower (each within 1.6 standard errors; docs/results.md); GKAVisionMixer has it on.
        kernel_config: the Triton kernels' tuning, a GKAKernelConfig spec string of overrides on top of the default
            for the inputs' dtype ('' = the default; e.g. 'num_warps=8'; docs/kernels.md "The kernel config").
        fuse_pointwise: where the scan runs on the Triton backend in eager mode, the q/k normalisation with the beta
            gate and the gated RMSNorm run as one Triton kernel each way (mixer_parts.fused_pointwise_on); same
            arithmetic in fp32. False: the PyTorch ops (as under torch.compile, which fuses them itself).

    forward(x [B, N, C], hw=(H, W)) -> [B, N, C], N must equal H * W.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            ridge_ratio: float = 0.02,
            num_iter: int = 30,
            backend: str = 'auto',
            conv_kernel_size: int = 3,
            norm_eps: float = 1e-6,
            proj_drop: float = 0.,
            sequential_backward: bool = False,
            qk_input_dtype: bool = False,
            kernel_config: str = '',
            fuse_pointwise: bool = True,
    ):
        super().__init__()
        check_solver_options(type(self).__name__, ridge_ratio, num_iter)
        check_kernel_config(type(self).__name__, kernel_config)
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.ridge_ratio = ridge_ratio
        self.num_iter = num_iter
        self.backend = backend
        self.sequential_backward = sequential_backward
        self.qk_input_dtype = qk_input_dtype
        self.kernel_config = kernel_config
        self.fuse_pointwise = fuse_pointwise
        self.selective_recompute: Optional[bool] = False  # the enclosing block's setting (layers/blocks.py)

        self.conv = nn.Conv2d(dim, dim, conv_kernel_size, padding=conv_kernel_size // 2, groups=dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.beta_proj = nn.Linear(dim, num_heads)
        self.alpha_proj = nn.Linear(dim, num_heads)
        # Forget gates, one per scan direction; dt_bias plays the role of the projection's bias.
        self.a_proj_fwd = nn.Linear(dim, num_heads, bias=False)
        self.a_proj_bwd = nn.Linear(dim, num_heads, bias=False)
        self.A_log_fwd = nn.Parameter(init_A_log_uniform(num_heads))
        self.A_log_bwd = nn.Parameter(init_A_log_uniform(num_heads))
        self.dt_bias_fwd = nn.Parameter(init_dt_bias(num_heads))
        self.dt_bias_bwd = nn.Parameter(init_dt_bias(num_heads))

        self.gate_proj = nn.Linear(dim, dim, bias=False)
        self.norm = GatedRMSNorm(self.head_dim, eps=norm_eps)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @torch.jit.ignore
    def no_weight_decay(self):
        """Gate parameters that must not be weight-decayed (names relative to this module)."""
        return {'A_log_fwd', 'A_log_bwd', 'dt_bias_fwd', 'dt_bias_bwd'}

    def _small_projections(self, x: torch.Tensor) -> List[torch.Tensor]:
        """beta_proj, alpha_proj, a_proj_fwd, a_proj_bwd and gate_proj of x as one matmul (one saved x)."""
        nh = self.num_heads
        weight = torch.cat([self.beta_proj.weight, self.alpha_proj.weight, self.a_proj_fwd.weight,
                            self.a_proj_bwd.weight, self.gate_proj.weight])
        zeros = self.beta_proj.weight.new_zeros(2 * nh + self.dim)  # a_proj_fwd, a_proj_bwd, gate_proj: no bias
        bias = torch.cat([self.beta_proj.bias, self.alpha_proj.bias, zeros])
        return F.linear(x, weight, bias).split([nh, nh, nh, nh, self.dim], dim=-1)

    @torch.jit.ignore
    def _recompute(self, fn, num_tokens: int, *args):
        """fn(*args), its intermediates recomputed in the backward unless the enclosing block recomputes it all."""
        if selective_recompute_on(self.selective_recompute, num_tokens):
            return fn(*args)
        return recompute(fn, *args)

    @torch.jit.ignore
    def _normalize_qk(self, q, k, v, beta_logit, num_tokens: int):
        """q, k L2-normalised, k and v scaled by sigmoid(beta_logit): fused, or the PyTorch chain recomputed."""
        if fused_pointwise_on(self.fuse_pointwise, self.backend, q):  # saves only its inputs by itself
            return normalize_qk_gate_beta(q, k, v, beta_logit, self.qk_input_dtype, fused=True)
        return self._recompute(normalize_qk_gate_beta, num_tokens, q, k, v, beta_logit, self.qk_input_dtype, False)

    @torch.jit.ignore
    def _gated_norm(self, o, gate, num_tokens: int):
        if fused_pointwise_on(self.fuse_pointwise, self.backend, o):
            return gated_norm(self.norm, o, gate, fused=True)
        return self._recompute(self.norm, num_tokens, o, gate)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = check_tokens(x, self.dim, hw)
        B, N, C = x.shape
        H, W = hw
        nh, D = self.num_heads, self.head_dim

        # the conv reads the token map as a channels-last [B, C, H, W] view of x and hands the projections back a
        # contiguous [B, N, C] view of its output: no layout copy either way (cuDNN's channels-last depthwise conv)
        u = self.conv(x.reshape(B, H, W, C).permute(0, 3, 1, 2))
        u = F.silu(u).permute(0, 2, 3, 1).reshape(B, N, C)
        beta, alpha, a_fwd, a_bwd, gate = self._small_projections(x)
        q, k, v = self.qkv(u).view(B, N, 3, nh, D).unbind(2)
        if torch.jit.is_scripting():
            q, k, v = normalize_qk_scale_beta(q, k, v, torch.sigmoid(beta).unsqueeze(-1), self.qk_input_dtype)
        else:
            q, k, v = self._normalize_qk(q, k, v, beta, N)
        alpha = torch.sigmoid(alpha)
        g_fwd = log_forget_gate(a_fwd, self.A_log_fwd, self.dt_bias_fwd)
        g_bwd = log_forget_gate(a_bwd, self.A_log_bwd, self.dt_bias_bwd)

        o = _scan_bidirectional(q, k, v, alpha, g_fwd, g_bwd, self.ridge_ratio, self.num_iter, self.backend,
                                self.sequential_backward, self.kernel_config)
        if torch.jit.is_scripting():
            o = self.norm(o, gate.view(B, N, nh, D))
        else:
            o = self._gated_norm(o, gate.view(B, N, nh, D), N)
        o = self.proj(o.reshape(B, N, C))
        return self.proj_drop(o)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, ridge_ratio={self.ridge_ratio}, '
                f'num_iter={self.num_iter}, backend={self.backend!r}'
                + (f', kernel_config={self.kernel_config!r}' if self.kernel_config else ''))
