"""Pieces the token mixers share: gate parametrisation and init, q/k normalisation, the 'same'-padded conv,
solver-option checks, recomputation in the backward (of a few elementwise chains, or of a whole block but its
sequence mixing), and the Linear init of the models built from them.

GKA's log forget gate (docs/gka_spec.md section 1) is Mamba2's: g = -exp(A_log) * softplus(W_a x + dt_bias), with
dt_bias initialised as Mamba's step size (dt ~ logU(dt_min, dt_max), dt_bias = softplus^-1(dt)); the Mamba-1
mixers use the same step-size init for their dt_proj bias and the S4D-real init of A.
"""
import functools
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.fx
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import trunc_normal_

from ..ops.gka_scan import resolve_backend
from ..ops.scan_replay import ScanReplay
from .norm import autocast_output_dtype

__all__ = [
    'check_solver_options', 'init_A_log_uniform', 'init_A_log_s4d', 'init_dt_bias', 'init_dt_proj',
    'init_linear_weights', 'log_forget_gate', 'normalize_qk_scale_beta', 'conv1d_same_silu', 'recompute',
    'SELECTIVE_RECOMPUTE_MIN_TOKENS', 'check_selective_recompute', 'selective_recompute_on', 'recompute_keeping_scans',
    'kept_ops', 'fused_pointwise_on', 'normalize_qk_gate_beta', 'gated_norm',
]


def check_solver_options(owner: str, ridge_ratio: float, num_iter: int) -> None:
    """The GKA solve's options: lambda_t = ridge_ratio ||H_t||_F must be positive for the ridge problem to be well
    posed, and zero Chebyshev steps would return no solve at all."""
    if not ridge_ratio > 0:  # also refuses NaN
        raise ValueError(f'{owner}: ridge_ratio must be > 0, got {ridge_ratio}')
    if num_iter < 1:
        raise ValueError(f'{owner}: num_iter must be >= 1, got {num_iter}')


def check_kernel_config(owner: str, kernel_config: str) -> None:
    """A mixer's `kernel_config`: a GKAKernelConfig spec string of overrides on top of the Triton kernels' default
    for the inputs' dtype (docs/kernels.md), parsed here when the kernels are importable so that a typo fails at
    model creation instead of at the first CUDA step."""
    if not isinstance(kernel_config, str):
        raise TypeError(f'{owner}: kernel_config must be a spec string such as "exact_operands=0,num_warps=8", '
                        f'got {type(kernel_config).__name__}')
    if not kernel_config:  # the default: nothing to parse, no import of the kernels at model creation
        return
    try:
        from gka_kernels import GKAKernelConfig
    except ImportError:  # no Triton here: the spec only matters to the Triton backend
        return
    try:
        GKAKernelConfig.from_spec(kernel_config)
    except ValueError as e:
        raise ValueError(f'{owner}: kernel_config: {e}') from None


def init_A_log_uniform(num_heads: int, a_min: float = 1.0, a_max: float = 16.0) -> torch.Tensor:
    """GKA's per-head decay rate, stored as log A with A ~ U(a_min, a_max) (docs/gka_spec.md section 1 says
    U(0, 16); U(1, 16) avoids log(0))."""
    return torch.empty(num_heads).uniform_(a_min, a_max).log()


def init_A_log_s4d(channels: int, d_state: int) -> torch.Tensor:
    """Mamba-1's S4D-real init A[d, n] = -(n + 1), stored as log(n + 1), [channels, d_state]."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1).contiguous()


def init_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4) -> torch.Tensor:
    """softplus^-1(dt) = dt + log(-expm1(-dt)) for dt ~ logU(dt_min, dt_max) floored at dt_floor, [n]."""
    dt = torch.exp(torch.empty(n).uniform_(math.log(dt_min), math.log(dt_max))).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_floor: float = 1e-4, dt_scale: float = 1.0) -> None:
    """Mamba's init of the step-size projection: weight ~ U(+-dt_rank^-0.5 * dt_scale), bias = softplus^-1(dt)
    with init_dt_bias's dt, drawn as Mamba draws it (torch.rand scaled, not uniform_: the two round differently,
    and a seed keeps giving the same init). The bias is flagged `_no_reinit` so that `init_linear_weights`
    keeps it."""
    std = dt_rank ** -0.5 * dt_scale
    nn.init.uniform_(dt_proj.weight, -std, std)
    n = dt_proj.out_features
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    dt_proj.bias._no_reinit = True


def init_linear_weights(module: nn.Module, std: float = .02) -> None:
    """Truncated-normal weights and zero biases for every nn.Linear in `module`, except a Linear whose bias is
    flagged `_no_reinit` (Mamba's dt_proj: its bias is the step-size init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and not getattr(m.bias, '_no_reinit', False):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def log_forget_gate(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """Mamba2-style log forget gate g = -exp(A_log) softplus(a + dt_bias) <= 0 from the projection a = W_a x,
    in fp32 (docs/gka_spec.md section 1)."""
    return -torch.exp(A_log.float()) * F.softplus(a.float() + dt_bias.float())


def normalize_qk_scale_beta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                            qk_input_dtype: bool = True):
    """q, k, v [B, N, nh, D], beta [B, N, nh, 1] -> q, k L2-normalised (eps 1e-6); k, v scaled by beta.

    qk_input_dtype: q and k keep the dtype they came in (their projection's: bf16 under autocast). Otherwise they
    keep F.normalize's, which CUDA autocast runs in fp32 (the Triton core's solver schedule follows the least
    precise of q, k and v either way: docs/kernels.md "Precision by input dtype")."""
    qn = F.normalize(q, dim=-1, eps=1e-6)
    kn = F.normalize(k, dim=-1, eps=1e-6)
    if qk_input_dtype:
        qn, kn = qn.to(q.dtype), kn.to(k.dtype)
    return qn, kn * beta, v * beta


def fused_pointwise_on(enabled: bool, backend: str, x) -> bool:
    """Whether a mixer's per-token work around its scan (the q/k normalisation with the beta gate, the gated
    RMSNorm) runs as the Triton kernels of gka_kernels.mixer_pointwise, one launch per forward and per backward,
    instead of the PyTorch chain of a dozen elementwise ops: when `enabled` (the mixer's `fuse_pointwise`), the
    scan's backend resolves to 'triton' and the call runs eagerly. Under torch.compile the chain is traced
    (Inductor fuses it itself); torch.jit tracing, scripting and torch.fx symbolic tracing (a proxy, not a tensor)
    see the chain too. On the CPU (TRITON_INTERPRET=1) not under autocast, whose dtype rules the kernels follow
    for CUDA only."""
    if not enabled or not isinstance(x, torch.Tensor) or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if resolve_backend(backend, x.device) != 'triton':  # 'triton' only where gka_kernels imports
        return False
    return x.device.type == 'cuda' or not torch.is_autocast_enabled(x.device.type)


@functools.lru_cache(maxsize=1)
def _mixer_pointwise():
    from gka_kernels import mixer_pointwise
    return mixer_pointwise


def normalize_qk_gate_beta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta_logit: torch.Tensor,
                           qk_input_dtype: bool, fused: bool):
    """normalize_qk_scale_beta(q, k, v, sigmoid(beta_logit)[..., None], qk_input_dtype), beta_logit [B, N, nh];
    fused: as one Triton kernel each way (`fused_pointwise_on`), with the chain's output dtypes (q and k in fp32
    under CUDA autocast unless qk_input_dtype)."""
    if not fused:
        return normalize_qk_scale_beta(q, k, v, torch.sigmoid(beta_logit).unsqueeze(-1), qk_input_dtype)
    qk_dtype = q.dtype
    if not qk_input_dtype and torch.is_autocast_enabled(q.device.type):  # F.normalize's norm runs in fp32 there
        qk_dtype = torch.promote_types(q.dtype, torch.float32)
    return _mixer_pointwise().qk_norm_beta(q, k, v, beta_logit, qk_dtype)


def gated_norm(norm: nn.Module, x: torch.Tensor, gate: Optional[torch.Tensor], fused: bool) -> torch.Tensor:
    """norm(x, gate) for a GatedRMSNorm `norm`; fused: as one Triton kernel each way (`fused_pointwise_on`), with
    its output dtype (`autocast_output_dtype`)."""
    if not fused:
        return norm(x, gate)
    return _mixer_pointwise().gated_rms_norm(x, norm.weight, gate, norm.eps, autocast_output_dtype(x))


def conv1d_same_silu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SiLU(depthwise conv1d(x [B, C, L])) with 'same' padding written out (left (K-1)//2, right K//2, as
    PyTorch's 'same'), so that fvcore counts the conv."""
    K = weight.shape[-1]
    return F.silu(F.conv1d(F.pad(x, ((K - 1) // 2, K // 2)), weight, bias, groups=x.shape[1]))


def recompute(fn, *args):
    """fn(*args) with fn's intermediates recomputed in the backward instead of saved (non-reentrant
    torch.utils.checkpoint: only the inputs are kept). A plain call where no backward is recorded: grad mode off,
    torch.jit tracing or scripting, torch.fx symbolic tracing (its proxies are not tensors)."""
    if not _records_backward(args[0]):
        return fn(*args)
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)


def _records_backward(first_arg) -> bool:
    """Whether a call with this first argument records a backward to checkpoint (see `recompute`)."""
    return torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.jit.is_scripting() \
        and isinstance(first_arg, torch.Tensor)


# ---- selective recomputation: everything of a block but its sequence mixing (docs/benchmarks.md, "Activation
# memory at 1024 px"). The scans' outputs (o and what their backward needs: x, ||H_t||_F) are kept; every other op
# of the block (norms, projections, the conv, gates, the MLP) runs again in the backward, so a block keeps its
# input and its scans' outputs instead of every intermediate.

SELECTIVE_RECOMPUTE_MIN_TOKENS = 1024  # selective_recompute=None: on for token maps of at least this many tokens


def check_selective_recompute(owner: str, value) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f'{owner}: selective_recompute must be True, False or None (on from '
                         f'{SELECTIVE_RECOMPUTE_MIN_TOKENS} tokens), got {value!r}')
    return value


def selective_recompute_on(setting: Optional[bool], num_tokens: int,
                           min_tokens: int = SELECTIVE_RECOMPUTE_MIN_TOKENS) -> bool:
    """Whether a block with this `selective_recompute` setting recomputes all but its scans for num_tokens tokens
    (never under torch.fx symbolic tracing, whose token count is a proxy: a traced graph records no backward)."""
    if isinstance(num_tokens, torch.fx.Proxy):
        return False
    if setting is None:
        return num_tokens >= min_tokens
    return setting


@functools.lru_cache(maxsize=1)
def kept_ops() -> frozenset:
    """The ops whose outputs a selectively recomputed block keeps: the GKA and selective scans, and the fused
    attention kernels (SDPA on CUDA), i.e. the sequence mixing, which is the block's expensive part."""
    ops = [torch.ops.gka_vision.gka_scan.default, torch.ops.gka_vision.gka_scan_bidirectional.default,
           torch.ops.gka_vision.selective_scan.default]
    for name in ('_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention',
                 '_scaled_dot_product_cudnn_attention', '_flash_attention_forward', '_efficient_attention_forward'):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops.append(op.default)
    return frozenset(ops)


def _keep_scans_policy(ctx, op, *args, **kwargs):
    cp = torch.utils.checkpoint.CheckpointPolicy
    return cp.MUST_SAVE if op in kept_ops() else cp.PREFER_RECOMPUTE


def _keep_scans_context():
    """Under torch.compile: a selective policy, which Inductor's partitioner applies when it compiles."""
    return torch.utils.checkpoint.create_selective_checkpoint_contexts(_keep_scans_policy)


def _replay_scans_context():
    """In eager mode: the region keeps its scans' outputs and hands them back to its recomputation
    (ops/scan_replay.py), instead of a policy that would see every op through a Python dispatch mode."""
    return ScanReplay().contexts()


_keep_scans_context.keeps_scans = _replay_scans_context.keeps_scans = True  # read by benchmarks/activation_memory.py


def recompute_keeping_scans(fn, *args, replay_scans: bool = True):
    """fn(*args) with every op but the scans (`kept_ops`) run again in the backward instead of saving its outputs
    (non-reentrant torch.utils.checkpoint): only the tensor inputs and the scans' outputs are kept. Under
    torch.compile a selective checkpoint policy keeps them; in eager mode, the scan ops record their outputs and
    replay them in the recomputation (ops/scan_replay.py), unless `replay_scans=False` (a region with fused
    attention, whose outputs only the policy can keep; it runs every op through a dispatch mode). A plain call
    where no backward is recorded (as `recompute`)."""
    if not _records_backward(args[0]):
        return fn(*args)
    if replay_scans and not torch.compiler.is_compiling():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, context_fn=_replay_scans_context)
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, context_fn=_keep_scans_context)
