"""Input checks of the models' forward passes, as FX leaf functions (and TorchScript-compilable).

A check reads shapes and raises, so it is Python control flow on the input; under `torch.fx` symbolic
tracing it would fail ("symbolically traced variables cannot be used as inputs to control flow"). Each check
returns its input and is registered with timm (`register_notrace_function`, used by timm's FX feature
extraction) and wrapped with `torch.fx.wrap` in the modules that call it, so a traced graph keeps it as one
call that runs on the real tensor.
"""
from typing import Optional, Tuple

import torch
from timm.layers import register_notrace_function

__all__ = ['check_image', 'check_tokens']


def _shape(x: torch.Tensor) -> str:
    """'(2, 3, 64, 64)': the shape as a tuple prints, also under TorchScript."""
    return '(' + ', '.join([str(s) for s in x.shape]) + (',)' if x.ndim == 1 else ')')


@register_notrace_function
def check_image(x: torch.Tensor, in_chans: int, patch_size: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """x must be [B, in_chans, H, W] with H, W multiples of patch_size; returns x."""
    if x.ndim != 4:
        raise ValueError(
            f'expected an image batch of shape [B, {in_chans}, H, W], got a {x.ndim}-D tensor of '
            f'shape {_shape(x)}')
    if x.shape[1] != in_chans:
        raise ValueError(
            f'expected {in_chans} input channels, got {x.shape[1]} (an image batch of shape [B, {in_chans}, H, W], '
            f'got {_shape(x)}); '
            f'build the model with in_chans={x.shape[1]} to change it')
    H, W = x.shape[-2], x.shape[-1]
    ph, pw = patch_size
    if H % ph or W % pw:
        raise ValueError(
            f'input size {H}x{W} is not divisible by the patch size {ph}x{pw}; '
            f'resize or crop the image to a multiple of {ph}x{pw}')
    return x


@register_notrace_function
def check_tokens(x: torch.Tensor, dim: int, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """x must be tokens [B, N, dim] (with N = H * W when the grid hw is given); returns x."""
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f'expected tokens of shape [B, N, {dim}], got {_shape(x)}')
    if hw is not None and x.shape[1] != hw[0] * hw[1]:
        raise ValueError(f'token count N={x.shape[1]} does not match the grid size {hw[0]}x{hw[1]} '
                         f'(H*W={hw[0] * hw[1]})')
    return x
