"""MambaVision-T, the baseline of GKAVision, as a timm model: the hybrid backbone of gkavision.py with
MambaVision's own mixer (mixer='mamba', MambaVisionMixer: one causal Mamba-1 selective scan on half the channels,
a conv branch on the other half; d_state 8, d_conv 3, expand 1), so the two are compared on equal terms.
Written from the MambaVision paper's description (arXiv 2407.08083); the differences from its code are listed in
gkavision.py.
"""
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from .gkavision import GKAVision, create_gkavision


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'file': None,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 1.0,
        'interpolation': 'bicubic',
        'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0',
        'classifier': 'head',
        'paper_ids': 'arXiv:2407.08083',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'mambavision_tiny': _cfg(),
})


@register_model
def mambavision_tiny(pretrained: bool = False, **kwargs) -> GKAVision:
    model_args = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
                      mixer='mamba', mixer_kwargs=dict(d_state=8, d_conv=3, expand=1))
    return create_gkavision('mambavision_tiny', pretrained=pretrained, **dict(model_args, **kwargs))
