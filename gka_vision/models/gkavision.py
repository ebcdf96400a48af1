"""GKAVision, the GKA paper's ImageNet model: MambaVision's macro-architecture with the GKA mixer.

Same stem, conv stages, windows, attention blocks and timm API as mambavision.py (the class below only
changes the default mixer); the first half of the blocks of stages 2-3 use GKAVisionMixer: MambaVision's
mixer (half the channels through one causal scan, half through a conv branch) with GKA instead of S6, as
the paper's "replaces the mixer blocks of MambaVision with GKA layers" at MambaVision-T's 31.8M parameters.
Head dims are the stage's C / num_heads: 40 (tiny), 48 (small) and 64 (base). Widths and depths are
MambaVision-T/S/B's. ``mixer='gka_bi'`` builds the heavier variant with BidirectionalGKAMixer (all channels,
both scan directions; the default before 2026-11-28 16:00 UTC, docs/benchmarks.md "Model comparison").
``gka_head_dim=32`` gives the scan heads of 32 (no padding inside the Triton kernels; 5 % faster training on an
H200, accuracy not measured yet; docs/benchmarks.md compare run 8).
Reported (ImageNet-1K, 224px): GKAVision-T 81.27 top-1 (GKA paper, arXiv 2511.21016).
"""
from timm.models import generate_default_cfgs, register_model

from .mambavision import MambaVision, _cfg, create_hybrid

__all__ = ['GKAVision']


class GKAVision(MambaVision):
    """MambaVision layout with ``mixer='gka'`` by default; see MambaVision for the arguments."""

    def __init__(self, *args, mixer: str = 'gka', **kwargs):
        super().__init__(*args, mixer=mixer, **kwargs)


default_cfgs = generate_default_cfgs({
    'gkavision_tiny': _cfg(paper_ids='arXiv:2511.21016', license='apache-2.0'),
    'gkavision_small': _cfg(paper_ids='arXiv:2511.21016', license='apache-2.0'),
    'gkavision_base': _cfg(paper_ids='arXiv:2511.21016', license='apache-2.0'),
})


@register_model
def gkavision_tiny(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7))
    return create_hybrid(GKAVision, 'gkavision_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gkavision_small(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=96, in_dim=64, depths=(3, 3, 7, 5), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7))
    return create_hybrid(GKAVision, 'gkavision_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def gkavision_base(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=128, in_dim=64, depths=(3, 3, 10, 5), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
                      layer_scale=1e-5)
    return create_hybrid(GKAVision, 'gkavision_base', pretrained=pretrained, **dict(model_args, **kwargs))
