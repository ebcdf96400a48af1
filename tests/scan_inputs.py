"""Random inputs of the selective scan, for its CPU tests (ops/) and CUDA tests (gpu/)."""
import torch


def selective_scan_inputs(b=2, d=4, L=5, n=3, groups=None, dtype=torch.float64, seed=0):
    """u, delta, A, B, C, D, z, delta_bias of ``selective_scan``: batch b, d channels, length L, d_state n
    (``groups`` groups of B and C), seeded."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc_shape = (b, n, L) if groups is None else (b, groups, n, L)
    return dict(u=r(b, d, L), delta=0.5 * r(b, d, L), A=-(torch.rand(d, n, generator=g, dtype=dtype) + 0.2),
                B=r(*bc_shape), C=r(*bc_shape), D=r(d), z=r(b, d, L), delta_bias=0.1 * r(d))
