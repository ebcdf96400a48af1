"""timm's factory kwargs `device=` / `dtype=` for the model classes.

timm's `create_model(name, device=..., dtype=...)` passes them to the model's constructor, which must create
every parameter and buffer on that device (e.g. 'meta': structure without memory) in that dtype. Here the
constructor runs inside a `torch.device` context (every tensor factory call in it lands on the device) and
the floating-point tensors are cast to `dtype` afterwards.
"""
import functools
from contextlib import nullcontext

import torch


def accepts_device_dtype(init):
    """Decorator for a model class's __init__ adding keyword args device=None, dtype=None (see module doc)."""
    @functools.wraps(init)
    def wrapper(self, *args, device=None, dtype=None, **kwargs):
        with torch.device(device) if device is not None else nullcontext():
            init(self, *args, **kwargs)
        if dtype is not None:
            self.to(dtype=dtype)
    return wrapper


def like(param: torch.Tensor) -> dict:
    """device / dtype of an existing parameter, for a module created later (reset_classifier, set_input_size)."""
    return dict(device=param.device, dtype=param.dtype)
