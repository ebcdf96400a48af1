"""FLOPs (fvcore), parameter counts, throughput and peak memory of a model.

fvcore cannot see inside the GKA and selective-scan cores: its jit trace shows each as one node of a custom op
(``gka_vision::gka_scan_bidirectional``, ``gka_vision::selective_scan`` ...), counted here by the handles their
op modules export in ``FVCORE_HANDLES``. fvcore's convention is kept: one multiply-add counts as one FLOP, so "GFLOPs"
below are GMACs, the number timm's benchmark and most vision papers report.
"""
from __future__ import annotations

import importlib
import time
from typing import Dict, Optional, Tuple

import torch

# modules that may export FVCORE_HANDLES = {"<namespace>::<op>": handle}; missing ones are skipped
HANDLE_MODULES = ("gka_vision.ops.flops", "gka_vision.ops.selective_scan")
# zero- or negligible-cost ops whose "unsupported" warnings only hide real gaps
_IGNORE = ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::gelu", "aten::silu", "aten::sigmoid",
           "aten::softplus", "aten::div", "aten::sub", "aten::rsub", "aten::neg", "aten::exp", "aten::log",
           "aten::mean", "aten::sum", "aten::pow", "aten::sqrt", "aten::rsqrt", "aten::clamp", "aten::clamp_min",
           "aten::softmax", "aten::norm", "aten::linalg_vector_norm", "aten::logsigmoid", "aten::reciprocal",
           "aten::dropout", "aten::abs", "aten::max", "aten::min", "aten::cumsum", "aten::tanh")


def sdpa_flop_jit(inputs, outputs) -> int:
    """MACs of softmax(Q K^T) V for q [..., N, D], k/v [..., M, D]: Q K^T and the weighted sum.

    fvcore has no handle for aten::scaled_dot_product_attention and would count attention as zero.
    """
    from fvcore.nn.jit_handles import get_shape
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    *batch, n, d = q
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n * k[-2] * d


def custom_op_handles() -> Dict[str, object]:
    handles = {"aten::scaled_dot_product_attention": sdpa_flop_jit}
    for name in HANDLE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        handles.update(getattr(mod, "FVCORE_HANDLES", {}) or {})
    return handles


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: torch.nn.Module, input_size: Tuple[int, int, int], device="cpu") -> dict:
    """fvcore count at batch 1: {"gflops": GMACs, "by_operator": {...}, "unsupported": {...}}."""
    from fvcore.nn import FlopCountAnalysis
    model = model.eval()
    x = torch.zeros(1, *input_size, device=device)
    fca = FlopCountAnalysis(model, x)
    for op, handle in custom_op_handles().items():
        fca.set_op_handle(op, handle)
    for op in _IGNORE:
        fca.set_op_handle(op, None)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    total = fca.total()
    return {"gflops": total / 1e9, "by_operator": {k: v / 1e9 for k, v in fca.by_operator().items()},
            "unsupported": dict(fca.unsupported_ops())}


@torch.no_grad()
def throughput(model: torch.nn.Module, batch_size: int, input_size: Tuple[int, int, int], *,
               device: torch.device, amp_dtype: Optional[torch.dtype] = None, warmup: int = 2,
               iters: int = 5) -> dict:
    """Inference images/s and peak memory at ``batch_size`` (CUDA: allocator peak; CPU: process peak RSS)."""
    model = model.eval().to(device)
    x = torch.randn(batch_size, *input_size, device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else torch.no_grad
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        with ctx():
            model(x)
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        with ctx():
            model(x)
    if cuda:
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    out = {"batch_size": batch_size, "img_per_s": batch_size * iters / dt}
    if cuda:
        out["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_mem_kind"] = "cuda max_memory_allocated"
    else:
        import resource
        out["peak_mem_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_mem_kind"] = "process peak RSS"
    return out
