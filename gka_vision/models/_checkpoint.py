"""Checkpoint adaptation shared by the model families (their `checkpoint_filter_fn`s)."""
import logging
from typing import Any, Callable, Dict, Optional

import torch

_logger = logging.getLogger(__name__)

# A family's hook for keys it knows how to resize (position embedding, patch kernel):
# (key, checkpoint tensor, model tensor) -> adapted tensor, or None when it does not handle the key.
ResizeFn = Callable[[str, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]


def adapt_state_dict(state_dict: Dict[str, Any], model: torch.nn.Module, first_conv: str,
                     resize: Optional[ResizeFn] = None) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint saved by this project (or a wrapped training checkpoint) to `model`.

    - unwraps {'state_dict_ema' | 'model_ema' | 'state_dict' | 'model': ...} (EMA first, as timm does);
    - strips 'module.' (DDP) and '_orig_mod.' (torch.compile) prefixes, drops non-tensor entries;
    - lets `resize` adapt the keys it knows (e.g. pos_embed to another grid);
    - keeps `first_conv` weights whose input-channel count differs (timm adapts them via first_conv);
    - replaces a classifier of another width with the model's fresh one (drops it if the model has none);
    - raises a ValueError naming the key on any other shape mismatch.
    Unknown keys are passed on for load_state_dict(strict=...) to report.
    """
    for key in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    model_sd = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        for prefix in ('module.', '_orig_mod.'):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not isinstance(v, torch.Tensor):
            continue
        target = model_sd.get(k)
        if k.startswith('head.') and target is None:
            continue  # the model has no classifier
        if target is None or v.shape == target.shape:
            out[k] = v
            continue
        resized = resize(k, v, target) if resize is not None else None
        if resized is not None:
            out[k] = resized
        elif k == first_conv + '.weight' and v.shape[0] == target.shape[0] and v.shape[2:] == target.shape[2:]:
            out[k] = v  # input-channel count differs: timm adapts it via first_conv
        elif k in ('head.weight', 'head.bias'):
            _logger.info(f'Classifier shape {tuple(v.shape)} != {tuple(target.shape)}: keeping a fresh {k}')
            out[k] = target
        else:
            raise ValueError(f"checkpoint key '{k}' has shape {tuple(v.shape)}, "
                             f"the model expects {tuple(target.shape)}")
    return out
