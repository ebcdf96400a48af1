from .selective_scan import selective_scan_triton  # noqa: F401  (Mamba-1 scan, forward and backward)
