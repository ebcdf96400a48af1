"""Parts of the timm model API that the backbones (gka_vit.py, gkavision.py) share."""
import torch.nn as nn

from ..layers import set_block_recompute, set_block_selective_recompute


def check_global_pool(global_pool: str) -> str:
    if global_pool not in ('', 'avg'):
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
    return global_pool


def no_weight_decay_names(model: nn.Module) -> set:
    """Full names of the parameters that the model's submodules exempt from weight decay (the mixers' scan gates:
    A_log, dt_bias, D), also valid fnmatch patterns."""
    skip = set()
    for name, module in model.named_modules():
        if module is not model and hasattr(module, 'no_weight_decay'):
            skip.update(f'{name}.{n}' for n in module.no_weight_decay())
    return skip


def switch_recompute(model: nn.Module, enable: bool) -> None:
    """The models' `set_recompute_mixer`: every token-mixer block recomputes norm + mixer in the backward
    (layers/blocks.py); a model without such blocks (e.g. pruned to its conv stages) cannot, and says so."""
    if not set_block_recompute(model, enable) and enable:
        raise ValueError(f'{type(model).__name__} has no token-mixer blocks to recompute '
                         '(recompute_mixer applies to the mixer and attention blocks)')


def switch_selective_recompute(model: nn.Module, setting) -> None:
    """The models' `set_selective_recompute` (layers/blocks.py): True, False or None (from 1024 tokens); a model
    without token-mixer blocks cannot, and says so."""
    if not set_block_selective_recompute(model, setting) and setting:
        raise ValueError(f'{type(model).__name__} has no token-mixer blocks to recompute '
                         '(selective_recompute applies to the mixer and attention blocks)')
