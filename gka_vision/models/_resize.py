"""Recording a model resize (`set_input_size`) so that saving and reloading rebuild the resized model.

timm's models record a resize with `timm.models._input.update_model_input_size` (the current image size in
the model's traits, the changed constructor args in its model args); `timm.models.save_for_hf` then writes
them into config.json and `timm.create_model('local-dir:...')` rebuilds the resized model. Older timm has no
such record (its save_for_hf writes only the model args it is given); the args are kept on the model the same
way, for the caller to pass on.
"""
from typing import Any, Optional, Sequence, Tuple, Union

from torch import nn

try:
    from timm.models._input import update_model_input_size as _timm_update_model_input_size
except ImportError:  # timm < 1.0.31
    _timm_update_model_input_size = None


def record_input_size(model: nn.Module, img_size: Optional[Union[int, Sequence[int]]], **model_args: Any) -> None:
    """Record the model's current image size and any other changed constructor args (None: unchanged)."""
    size: Optional[Tuple[int, int]] = None
    if img_size is not None:
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if _timm_update_model_input_size is not None:
        _timm_update_model_input_size(model, size, **model_args)
        return
    args = dict(getattr(model, '_model_args', {}))
    args.update({k: v for k, v in model_args.items() if v is not None})
    if size is not None:
        args['img_size'] = size
    model._model_args = args
