"""gka-vision: Gated KalmaNet (GKA) vision backbones for timm.

Importing this package registers every model family with timm, so
``timm.create_model("gka_small_patch16_224")`` works after ``import gka_vision``.
"""
__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the timm entrypoints)
from .ops import gka_scan, gka_scan_bidirectional  # noqa: F401
