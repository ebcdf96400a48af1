from .gka_scan import BACKENDS, GKAScanFunction, gka_scan, gka_scan_bidirectional, set_debug_checks
from .gka_reference import gka_scan_reference
from .gka_chunked import gka_scan_chunked
from .flops import FVCORE_HANDLES, gka_scan_flop_jit, gka_scan_macs
