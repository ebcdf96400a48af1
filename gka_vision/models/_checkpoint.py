"""Checkpoint adaptation shared by the model families (their `checkpoint_filter_fn`s).

Every change made to a checkpoint on its way into a model (classifier reset, position-embedding resize,
patch-kernel resample, input-channel adaptation) is logged as one warning line naming the key and the
shapes; a checkpoint that does not fit the model raises a ValueError naming the keys and, when the
weights carry their model args (`config.json` beside an exported file, or a training checkpoint), the
call that builds the matching model.
"""
import inspect
import json
import logging
import math
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

_logger = logging.getLogger(__name__)

# A family's hook for keys it knows how to resize (position embedding, patch kernel):
# (key, checkpoint tensor, model tensor) -> adapted tensor, or None when it does not handle the key.
ResizeFn = Callable[[str, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]

_WRAPPERS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')


def _timm_adapts_from_cfg() -> bool:
    """Newer timm adapts the first conv from the channel count the pretrained_cfg declares (input_size[0]);
    older timm (before `adapt_input_conv(..., base_chans)`) only from 3 channels, and only when the model's
    in_chans is not 3."""
    try:
        from timm.models._manipulate import adapt_input_conv
    except ImportError:  # pragma: no cover - very old timm
        return False
    return 'base_chans' in inspect.signature(adapt_input_conv).parameters


_TIMM_ADAPTS_FROM_CFG = _timm_adapts_from_cfg()


def adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A conv kernel [O, I, kh, kw] for `in_chans` input channels: summed over I for one channel, else
    the I source channels repeated and scaled by I / in_chans (a constant image gives the same output)."""
    src = weight.shape[1]
    if src == in_chans:
        return weight
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / src), 1, 1)[:, :in_chans] * (src / in_chans)
    return w.to(weight.dtype)


def unwrap_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """The model weights of a wrapped training checkpoint (EMA first, as timm does), else the dict itself."""
    for key in _WRAPPERS:
        if isinstance(state_dict.get(key), dict):
            return state_dict[key]
    return state_dict


def strip_wrapper_prefixes(key: str) -> str:
    """A state-dict key without the 'module.' (DDP) and '_orig_mod.' (torch.compile) prefixes of wrapped models."""
    return key.removeprefix('module.').removeprefix('_orig_mod.')


def source_model_args(pretrained_cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The model args the weights named by `pretrained_cfg` were saved with: `model_args` of the
    `config.json` beside an exported file, or `model_kwargs` of a training checkpoint (.pth). None if unknown."""
    file = pretrained_cfg.get('file')
    if not file or not isinstance(file, (str, os.PathLike)) or not os.path.isfile(file):
        return None
    cfg_json = os.path.join(os.path.dirname(os.path.abspath(file)), 'config.json')
    if os.path.isfile(cfg_json):
        try:
            with open(cfg_json) as f:
                args = json.load(f).get('model_args')
            if isinstance(args, dict):
                return args
        except (OSError, ValueError):
            pass
    if not str(file).endswith('.safetensors'):
        try:
            ckpt = torch.load(file, map_location='cpu', weights_only=True, mmap=True)
        except Exception:  # an unreadable or unsafe file: no hint, the load itself reports it
            return None
        args = ckpt.get('model_kwargs') if isinstance(ckpt, dict) else None
        if isinstance(args, dict):
            return {k: v for k, v in args.items() if k not in ('drop_path_rate', 'drop_rate')}
    return None


def _fix_hint(pretrained_cfg: Dict[str, Any]) -> str:
    file = pretrained_cfg.get('file')
    args = source_model_args(pretrained_cfg)
    name = pretrained_cfg.get('architecture', '<model>')
    if args is None:
        return (' Build the model with the architecture args the weights were trained with '
                '(embed_dim, depth, patch_size, ... as keyword args of timm.create_model).')
    shown = ', '.join(f'{k}={v!r}' for k, v in args.items())
    folder = os.path.dirname(os.path.abspath(file))
    hint = (f' The weights were saved with model args dict({shown}): pass them, '
            f'timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={str(file)!r}), '
            f'**model_args)')
    if os.path.isfile(os.path.join(folder, 'config.json')):
        hint += f", or load the folder: timm.create_model('local-dir:{folder}', pretrained=True)"
    return hint + '.'


def adapt_state_dict(state_dict: Dict[str, Any], model: torch.nn.Module, first_conv: str,
                     resize: Optional[ResizeFn] = None) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint saved by this project (or a wrapped training checkpoint) to `model`.

    - unwraps {'state_dict_ema' | 'model_ema' | 'state_dict' | 'model': ...} (EMA first, as timm does);
    - strips 'module.' (DDP) and '_orig_mod.' (torch.compile) prefixes, drops non-tensor entries;
    - lets `resize` adapt the keys it knows (e.g. pos_embed to another grid);
    - adapts a `first_conv` kernel with another input-channel count (or leaves it to timm where timm's
      own adaptation, driven by the pretrained_cfg's input_size, gets it right);
    - replaces a classifier of another width with the model's fresh one (drops it if the model has none);
    - raises a ValueError naming the keys on any other shape mismatch, with the call that fits the weights
      when their model args are known.
    Each adaptation, and a classifier that timm is about to drop because the pretrained_cfg's num_classes
    differs from the model's, is logged as a warning. Unknown keys are passed on for
    load_state_dict(strict=...) to report.
    """
    state_dict = unwrap_state_dict(state_dict)
    pretrained_cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    classifier = pretrained_cfg.get('classifier') or 'head'
    head_keys = (classifier + '.weight', classifier + '.bias')
    model_sd = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    changes: List[str] = []
    mismatched: List[Tuple[str, tuple, tuple]] = []
    head_reset = None
    for k, v in state_dict.items():
        k = strip_wrapper_prefixes(k)
        if not isinstance(v, torch.Tensor):
            continue
        target = model_sd.get(k)
        if k.startswith(classifier + '.') and target is None:
            continue  # the model has no classifier
        if target is None or v.shape == target.shape:
            out[k] = v
            continue
        try:
            resized = resize(k, v, target) if resize is not None else None
        except ValueError as e:
            raise ValueError(str(e) + '.' + _fix_hint(pretrained_cfg)) from None
        if resized is not None:
            out[k] = resized
            changes.append(f'{k} resized {tuple(v.shape)} -> {tuple(resized.shape)}')
        elif k == first_conv + '.weight' and v.ndim == 4 and v.shape[0] == target.shape[0] \
                and v.shape[2:] == target.shape[2:]:
            out[k] = _first_conv(v, target.shape[1], pretrained_cfg)
            changes.append(f'{k} adapted from {v.shape[1]} to {target.shape[1]} input channels')
        elif k in head_keys:
            out[k] = target
            head_reset = (v.shape[0], target.shape[0])
        else:
            mismatched.append((k, tuple(v.shape), tuple(target.shape)))
    if mismatched:
        k, got, want = mismatched[0]
        more = f' (and {len(mismatched) - 1} more keys)' if len(mismatched) > 1 else ''
        raise ValueError(f"checkpoint key '{k}' has shape {got}, the model expects {want}{more}; the weights "
                         f"were saved from a differently sized model." + _fix_hint(pretrained_cfg))
    missing = [k for k in model_sd if k not in out and not k.startswith(classifier + '.')]
    unexpected = [k for k in out if k not in model_sd]
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"{len(missing)} model keys are not in the weights ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            what.append(f"{len(unexpected)} keys of the weights are not in the model ({', '.join(unexpected[:3])}"
                        f"{', ...' if len(unexpected) > 3 else ''})")
        raise ValueError(f"the weights do not fit the model: {'; '.join(what)}; they were saved from a model "
                         f"of another depth or layout." + _fix_hint(pretrained_cfg))

    src = _describe(pretrained_cfg)
    if head_reset is not None:
        changes.append(f'classifier {classifier} reset: the weights have {head_reset[0]} classes, the model '
                       f'{head_reset[1]} (freshly initialised)')
    elif head_keys[0] in model_sd and head_keys[0] not in out:
        changes.append(f'classifier {classifier} freshly initialised: the weights have none')
    elif head_keys[0] in out:
        declared = pretrained_cfg.get('num_classes')
        n = out[head_keys[0]].shape[0]
        if declared is not None and declared != getattr(model, 'num_classes', n):
            # timm's load_pretrained drops the classifier when num_classes != pretrained_cfg['num_classes']
            changes.append(
                f'classifier {classifier} ({n} classes) matches the model but the pretrained_cfg says '
                f'num_classes={declared}, so timm drops it (freshly initialised); to keep it pass '
                f"pretrained_cfg_overlay=dict(file=..., num_classes={n}) or load the exported folder with "
                f"'local-dir:'")
    for line in changes:
        _logger.warning(f'Loading {src}: {line}')
    return out


def _first_conv(v: torch.Tensor, in_chans: int, pretrained_cfg: Dict[str, Any]) -> torch.Tensor:
    """The first-conv kernel for `in_chans`, or unchanged where timm's load_pretrained adapts it correctly."""
    declared = (pretrained_cfg.get('input_size') or (3,))[0]
    if _TIMM_ADAPTS_FROM_CFG:
        timm_does_it = v.shape[1] == declared
    else:  # older timm: from 3 channels, only when the model's in_chans is not 3
        timm_does_it = v.shape[1] == 3 and in_chans != 3
    if timm_does_it:
        return v
    return adapt_in_chans(v, in_chans)


def _describe(pretrained_cfg: Dict[str, Any]) -> str:
    for key in ('file', 'hf_hub_id', 'url'):
        if pretrained_cfg.get(key):
            return f'{pretrained_cfg[key]}'
    return 'pretrained weights'
