from .gka_scan import BACKENDS, gka_scan, gka_scan_bidirectional, set_debug_checks
from .gka_reference import gka_scan_reference
from .gka_chunked import gka_scan_chunked
from . import selective_scan  # noqa: F401  (the module: registers the op gka_vision::selective_scan)
from .flops import FVCORE_HANDLES, gka_scan_flop_jit, gka_scan_macs
