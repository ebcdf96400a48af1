"""Token mixers by name: the `mixer=` argument of the backbones, and the options each mixer takes.

    'gka'       GKAVisionMixer           one causal GKA scan on half the channels (MambaVision's mixer shape)
    'gka_bi'    BidirectionalGKAMixer    all channels, a forward and a reverse GKA scan
    'mamba'     MambaVisionMixer         MambaVision's mixer: one causal S6 scan on half the channels
    'mamba_bi'  BidirectionalMambaMixer  Vim's bidirectional Mamba-1 mixer ("bimamba v2")
    'attn'      AttentionMixer           multi-head self-attention

Every mixer maps tokens x [B, N, C] (raster order over an H x W grid) with mixer(x, (H, W)). A backbone passes
what it owns: the width, the head count to the mixers that have heads, the dropout after the output projection;
everything else is the mixer's own option (`mixer_kwargs` of the backbones), checked here against the mixer's
constructor. `sequential_backward` belongs to the blocks' recompute switch (layers/blocks.py).
"""
import inspect
from typing import Any, Dict, Optional, Tuple, Type

import torch.nn as nn

from .attention import AttentionMixer
from .gka_mixer import BidirectionalGKAMixer
from .gka_vision_mixer import GKAVisionMixer
from .mamba_mixer import BidirectionalMambaMixer, MambaVisionMixer

__all__ = ['MIXERS', 'get_mixer', 'mixer_options', 'create_mixer', 'pop_mixer_options']

MIXERS: Dict[str, Type[nn.Module]] = {
    'gka': GKAVisionMixer,
    'gka_bi': BidirectionalGKAMixer,
    'mamba': MambaVisionMixer,
    'mamba_bi': BidirectionalMambaMixer,
    'attn': AttentionMixer,
}

_PASSED_BY_BACKBONE = ('dim', 'num_heads', 'proj_drop', 'sequential_backward')

# create_model kwargs that name a mixer option differently: {flat name: (mixer, option)}
_FLAT_ALIASES = {'gka_head_dim': ('gka', 'head_dim')}


def get_mixer(name: str) -> Type[nn.Module]:
    if name not in MIXERS:
        raise ValueError(f'unknown mixer {name!r}; choose one of {tuple(MIXERS)}')
    return MIXERS[name]


def mixer_options(name: str) -> Tuple[str, ...]:
    """The keyword options of mixer `name` (its constructor's arguments that the backbone does not pass)."""
    params = inspect.signature(get_mixer(name)).parameters
    return tuple(p for p in params if p not in _PASSED_BY_BACKBONE)


def create_mixer(name: str, dim: int, num_heads: Optional[int] = None, proj_drop: float = 0.,
                 **kwargs: Any) -> nn.Module:
    """Mixer `name` for width `dim` with its own options `kwargs`; `num_heads` goes to the mixers with heads."""
    cls = get_mixer(name)
    options = mixer_options(name)
    for k in kwargs:
        if k not in options:
            raise TypeError(f"mixer {name!r} ({cls.__name__}) has no option {k!r}; its options: "
                            f"{', '.join(options) or 'none'}")
    if 'num_heads' in inspect.signature(cls).parameters:
        kwargs['num_heads'] = num_heads
    return cls(dim, proj_drop=proj_drop, **kwargs)


def pop_mixer_options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The mixer options given flat to timm.create_model (as configs and saved model args give them:
    `create_model('gkavision_tiny', num_iter=10)`), removed from `kwargs` and merged over kwargs['mixer_kwargs'].

    An option of kwargs['mixer'] moves; an option only of other mixers is a ValueError naming them; any other
    key stays for the backbone's constructor (which raises TypeError on an unknown one).
    """
    mixer = kwargs['mixer']
    get_mixer(mixer)
    owners: Dict[str, Dict[str, str]] = {}  # flat name -> {mixer: its option}
    for other in MIXERS:
        for option in mixer_options(other):
            owners.setdefault(option, {})[other] = option
    for flat, (other, option) in _FLAT_ALIASES.items():
        owners[flat] = {other: option}
    merged = dict(kwargs.get('mixer_kwargs') or {})
    for key in [k for k in kwargs if k in owners]:
        value = kwargs.pop(key)
        if mixer not in owners[key]:
            names = ' or '.join(repr(m) for m in owners[key])
            raise ValueError(f'{key}={value!r} applies to mixer={names} only, not mixer={mixer!r}')
        merged[owners[key][mixer]] = value
    return merged
