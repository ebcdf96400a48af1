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


def _switch_blocks(model: nn.Module, set_blocks, setting, option: str) -> None:
    """Set `option` on every token-mixer block with `set_blocks` (layers/blocks.py); a model without such blocks
    (e.g. pruned to its conv stages) cannot turn it on, and says so."""
    if not set_blocks(model, setting) and setting:
        raise ValueError(f'{type(model).__name__} has no token-mixer blocks to recompute '
                         f'({option} applies to the mixer and attention blocks)')


def switch_recompute(model: nn.Module, enable: bool) -> None:
    """The models' `set_recompute_mixer`."""
    _switch_blocks(model, set_block_recompute, enable, 'recompute_mixer')


def switch_selective_recompute(model: nn.Module, setting) -> None:
    """The models' `set_selective_recompute`: True, False or None (from 1024 tokens)."""
    _switch_blocks(model, set_block_selective_recompute, setting, 'selective_recompute')
