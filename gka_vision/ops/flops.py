"""Multiply-accumulate counts of the GKA core (fvcore counts one MAC as one "flop").

fvcore cannot look inside the op: its jit trace shows each scan as one node of the custom ops
`gka_vision::gka_scan` / `gka_vision::gka_scan_bidirectional` (gka_scan.py), and the handles below count them.
"""
from typing import Any, List


def gka_scan_macs(batch, seq_len, heads, head_dim, num_iter=30, chunk_size=64, directions=1):
    """MACs of the chunked GKA forward (docs/gka_spec.md section 3) with chunk_size-token chunks.

    The default, 64, is the torch backend's chunk; the Triton kernels run 16-token chunks (their
    intra-chunk terms, 2 C D per iteration, are 4x smaller) and refinement rounds (docs/kernels.md), so this
    is a convention for comparing models, not the kernels' exact count (bench_gka_core.py has that).

    Per token and head, with C = min(chunk, T), D = head dim:
      key-covariance and value chunk states  2 D^2
      Frobenius norms (K H_p, K K^T)         D^2 + C D
      each Chebyshev iteration, and the one application of A for the implicit backward:
                                             D^2 (H_p x) + 2 C D (intra-chunk x K^T, then K)
      read-out (q' S_p, q' K^T, then V)      D^2 + 2 C D
    """
    C = min(chunk_size, seq_len)
    D = head_dim
    per_token = 2 * D * D + (D * D + C * D) + num_iter * (D * D + 2 * C * D) + (D * D + 2 * C * D)
    return directions * batch * heads * seq_len * per_token


def _num_iter(value) -> int:
    return int(value.toIValue())


def gka_scan_flop_jit(inputs: List[Any], outputs: List[Any], directions: int = 1) -> int:
    """fvcore handle of `gka_vision::gka_scan` (inputs: q, k, v, alpha, g, gk, ridge_ratio, num_iter, ...)."""
    from fvcore.nn.jit_handles import get_shape

    batch, seq_len, heads, head_dim = get_shape(inputs[0])
    return gka_scan_macs(batch, seq_len, heads, head_dim, _num_iter(inputs[7]), directions=directions)


def gka_scan_bidirectional_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle of `gka_vision::gka_scan_bidirectional` (inputs: q, k, v, alpha, g, g_rev, ridge_ratio,
    num_iter, ...): both directions."""
    return gka_scan_flop_jit(inputs, outputs, directions=2)


FVCORE_HANDLES = {"gka_vision::gka_scan": gka_scan_flop_jit,
                  "gka_vision::gka_scan_bidirectional": gka_scan_bidirectional_flop_jit}
