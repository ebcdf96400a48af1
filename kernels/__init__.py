"""gka_kernels: Triton kernels (import name of the top-level `kernels/` folder).

Set TRITON_INTERPRET=1 before importing this package to run the kernels on CPU tensors.
"""
from .selective_scan import selective_scan_triton  # noqa: F401  (Mamba-1 scan, forward and backward)
from .gka_function import GKATritonFunction, gka_scan_bidirectional_triton, gka_scan_triton  # noqa: F401
