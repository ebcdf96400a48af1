"""Mamba-1 token mixers for the baselines: Vim's bidirectional block and MambaVision's mixer.

Both call gka_vision.ops.selective_scan (S6; mamba_ssm's CUDA kernel when importable, else this
project's Triton kernel on CUDA, else PyTorch). Tokens come in as [B, N, C] in raster order; the
``hw`` argument is accepted (and ignored) so every mixer has the GKA mixer's call signature.

BidirectionalMambaMixer (Vim "bimamba v2"), for x [B, N, C]:

    x, z          = split(in_proj(x))                             shared by both directions, E = expand * C
    per direction (fwd: causal, bwd: anti-causal, i.e. scanning from the last token):
        x_d       = SiLU(conv1d_d(x))                             depthwise, kernel d_conv, one-sided padding
        dt, B, C  = split(x_proj_d(x_d));  delta = W_dt_d dt     dt_rank = ceil(C / 16)
        y_d       = selective_scan(x_d, delta, -exp(A_log_d), B, C, D_d, z, dt_bias_d, softplus)
    out           = out_proj((y_fwd + y_bwd) / 2)

MambaVisionMixer (MambaVision-T's stages 3-4), one direction, symmetric non-SSM branch:

    x, z = split(in_proj(x))                       each E / 2 channels, E = expand * C
    x    = SiLU(conv1d_x(x)),   z = SiLU(conv1d_z(z))      depthwise, 'same' padding (not causal)
    y    = selective_scan(x, W_dt dt, -exp(A_log), B, C, D, dt_bias, softplus)
    out  = out_proj(concat(y, z))
"""
import math
from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ..ops.selective_scan import selective_scan
from .input_checks import check_tokens
from .mixer_parts import conv1d_same_silu, init_A_log_s4d, init_dt_proj

__all__ = ['BidirectionalMambaMixer', 'MambaVisionMixer']

torch.fx.wrap('check_tokens')  # an FX leaf (it raises on shapes)


@register_notrace_function  # an FX leaf: timm's FX feature extraction and torch.fx keep the scan as one call
@torch.jit.ignore  # TorchScript: the scan stays a Python call (a scripted model runs; it cannot be saved)
def _scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
          z: Optional[torch.Tensor], delta_bias: torch.Tensor, reverse: bool, backend: str) -> torch.Tensor:
    """selective_scan with softplus on delta + delta_bias (both mixers' call)."""
    return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True, reverse=reverse,
                          backend=backend)


torch.fx.wrap('_scan')


class _SSMBranch(nn.Module):
    """Per-direction parameters of one S6 scan: conv1d, x_proj, dt_proj, A_log, D."""

    def __init__(self, channels: int, d_state: int, d_conv: int, dt_rank: int, conv_bias: bool = True):
        super().__init__()
        self.dt_rank, self.d_state = dt_rank, d_state
        self.conv1d = nn.Conv1d(channels, channels, d_conv, groups=channels, bias=conv_bias)
        self.x_proj = nn.Linear(channels, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, channels, bias=True)
        init_dt_proj(self.dt_proj, dt_rank)
        self.A_log = nn.Parameter(init_A_log_s4d(channels, d_state))
        self.D = nn.Parameter(torch.ones(channels))

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, E, L] (after conv + SiLU) -> delta [B, E, L] (no bias), B, C [B, N, L]."""
        dbc = self.x_proj(x.transpose(1, 2))                                     # [B, L, R + 2N]
        dt, Bm, Cm = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)                # bias goes in as delta_bias
        return delta, Bm.transpose(1, 2), Cm.transpose(1, 2)

    def scan(self, x: torch.Tensor, z: torch.Tensor, reverse: bool, backend: str) -> torch.Tensor:
        """Vim's per-direction path for x [B, E, L] gated by z: causal depthwise conv (reverse: the anti-causal
        one, scanning from the last token) + SiLU, the projections, the selective scan."""
        w = self.conv1d.weight
        K, L = w.shape[-1], x.shape[-1]
        # causal: out_t = sum_k w_k x_{t-K+1+k}; the reverse direction is the same conv on the flipped
        # sequence, i.e. anti-causal with the kernel flipped: out_t = sum_k w_k x_{t+K-1-k}.
        if reverse:
            x = F.conv1d(x, w.flip(-1), self.conv1d.bias, padding=K - 1, groups=w.shape[0])[..., K - 1:]
        else:
            x = F.conv1d(x, w, self.conv1d.bias, padding=K - 1, groups=w.shape[0])[..., :L]
        x = F.silu(x)
        delta, Bm, Cm = self.project(x)
        return _scan(x, delta, -torch.exp(self.A_log.float()), Bm, Cm, self.D.float(), z, self.dt_proj.bias.float(),
                     reverse, backend)


class _Mamba1Mixer(nn.Module):
    """The sizes and options of both Mamba-1 mixers: inner width E = expand * C, dt_rank 'auto' = ceil(C / 16)."""

    def __init__(self, dim: int, d_state: int, d_conv: int, expand: int, dt_rank, backend: str):
        super().__init__()
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        self.backend = backend

    @torch.jit.ignore
    def no_weight_decay(self):
        """A_log and D of every scan branch, which must not be weight-decayed (names relative to this module)."""
        return {f'{name}.{p}' for name, m in self.named_children() if isinstance(m, _SSMBranch) for p in ('A_log', 'D')}

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, '
                f'dt_rank={self.dt_rank}, backend={self.backend!r}')


class BidirectionalMambaMixer(_Mamba1Mixer):
    """Vim v2 bidirectional Mamba-1 mixer: shared in/out projections, per-direction SSM, outputs averaged.

    Args:
        dim: token width C.
        d_state: SSM state size N (Vim: 16).
        d_conv: causal depthwise conv width (Vim: 4).
        expand: inner width E = expand * C (Vim: 2).
        dt_rank: rank of the step-size projection; 'auto' = ceil(C / 16).
        backend: selective_scan backend ('auto', 'torch', 'triton', 'mamba_ssm').
        proj_drop: dropout after out_proj.

    forward(x [B, N, C], hw=None) -> [B, N, C].
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank='auto',
                 backend: str = 'auto', proj_drop: float = 0.):
        super().__init__(dim, d_state, d_conv, expand, dt_rank, backend)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.fwd = _SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.bwd = _SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.proj_drop = nn.Dropout(proj_drop)

    def _direction(self, branch: _SSMBranch, x: torch.Tensor, z: torch.Tensor, reverse: bool) -> torch.Tensor:
        """One direction (branch self.fwd with reverse=False, self.bwd with reverse=True) of x [B, E, L]."""
        return branch.scan(x, z, reverse, self.backend)

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = check_tokens(x, self.dim)
        xz = self.in_proj(x).transpose(1, 2)                  # [B, 2E, L]
        xs, z = xz.chunk(2, dim=1)
        y = 0.5 * (self.fwd.scan(xs, z, False, self.backend) + self.bwd.scan(xs, z, True, self.backend))
        return self.proj_drop(self.out_proj(y.transpose(1, 2)))


class MambaVisionMixer(_Mamba1Mixer):
    """MambaVision's mixer: one causal S6 scan on half the channels, a conv + SiLU path on the other half.

    Args:
        dim: token width C.
        d_state: SSM state size N (MambaVision: 8).
        d_conv: depthwise conv width, 'same' padding (MambaVision: 3).
        expand: inner width E = expand * C, split in two halves (MambaVision: 1).
        dt_rank: 'auto' = ceil(C / 16).
        backend: selective_scan backend.
        proj_drop: dropout after out_proj.

    forward(x [B, N, C], hw=None) -> [B, N, C].
    """

    def __init__(self, dim: int, d_state: int = 8, d_conv: int = 3, expand: int = 1, dt_rank='auto',
                 backend: str = 'auto', proj_drop: float = 0.):
        super().__init__(dim, d_state, d_conv, expand, dt_rank, backend)
        if self.d_inner % 2:
            raise ValueError(f'MambaVisionMixer: expand * dim = {self.d_inner} must be even (split in two halves)')
        half = self.d_inner // 2
        self.in_proj = nn.Linear(dim, self.d_inner, bias=False)
        self.ssm = _SSMBranch(half, d_state, d_conv, self.dt_rank, conv_bias=False)
        self.conv1d_z = nn.Conv1d(half, half, d_conv, groups=half, bias=False)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = check_tokens(x, self.dim)
        xz = self.in_proj(x).transpose(1, 2)                  # [B, E, L]
        xs, z = xz.chunk(2, dim=1)
        xs = conv1d_same_silu(xs, self.ssm.conv1d.weight)
        z = conv1d_same_silu(z, self.conv1d_z.weight)
        delta, Bm, Cm = self.ssm.project(xs)
        y = _scan(xs, delta, -torch.exp(self.ssm.A_log.float()), Bm, Cm, self.ssm.D.float(), None,
                  self.ssm.dt_proj.bias.float(), False, self.backend)
        return self.proj_drop(self.out_proj(torch.cat([y, z], dim=1).transpose(1, 2)))
