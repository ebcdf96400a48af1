"""gka_kernels: Triton kernels (import name of the top-level `kernels/` folder). Imports nothing from gka_vision.

Set TRITON_INTERPRET=1 before importing this package to run the kernels on CPU tensors.
"""
from .selective_scan import selective_scan_triton  # noqa: F401  (Mamba-1 scan, forward and backward)
from .gka_function import (  # noqa: F401
    GKAKernelConfig, GKATritonFunction, default_config, gka_scan_bidirectional_triton, gka_scan_triton,
    gka_triton_backward, gka_triton_forward, solve_dtype,
)
