"""What a weights file holds, so that train.py (``model.pretrained``) and eval.py (``--weights``) build the
model it was saved from: the model name and args, the classifier width and input channels (read from the
tensors themselves), and the preprocessing it was trained with.

Three kinds of file are understood:

* a training checkpoint of train.py (``last.pth`` / ``best.pth``): ``model_name``, ``model_kwargs`` and the
  run's ``config`` are stored in it;
* exported weights (``model.safetensors`` with ``config.json`` beside it, timm's layout);
* any other state dict (``.safetensors`` / ``.pth``): only the tensor shapes are known.

Every ``.pth`` is read with ``torch.load(weights_only=True)`` (``load_checkpoint``), so a file with pickled
objects is refused before timm opens it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .checkpoint import load_checkpoint, model_state_from, read_export_config

# create_model kwargs that are training regularisation, not architecture: never taken from a file
_RUNTIME_ARGS = ("drop_rate", "drop_path_rate", "proj_drop_rate", "pos_drop_rate", "attn_drop_rate")


@dataclass
class WeightsInfo:
    path: str
    kind: str  # 'checkpoint' (train.py's .pth), 'export' (config.json beside it) or 'weights'
    model_name: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)  # the args the weights were built with
    num_classes: Optional[int] = None  # rows of the classifier in the file; 0: the file has none
    in_chans: Optional[int] = None  # input channels of the file's first conv
    data: Dict[str, Any] = field(default_factory=dict)  # input_size, mean, std, crop_pct, interpolation
    label_names: Optional[List[str]] = None


def _names(model_name: Optional[str]) -> Tuple[str, Optional[str]]:
    """(classifier, first_conv) module names of a registered model (timm's pretrained_cfg)."""
    import timm
    import gka_vision  # noqa: F401  (registers the models)
    if model_name and timm.is_model(model_name):
        cfg = timm.get_pretrained_cfg(model_name)
        if cfg is not None:
            classifier = cfg.classifier if isinstance(cfg.classifier, str) else "head"
            first_conv = cfg.first_conv if isinstance(cfg.first_conv, str) else None
            return classifier, first_conv
    return "head", None


def _shapes(path: str, ckpt: Optional[Dict[str, Any]]) -> Dict[str, Tuple[int, ...]]:
    if ckpt is None:  # safetensors: the header alone
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    sd = model_state_from(ckpt)
    for k in ("state_dict_ema", "model_ema", "state_dict", "model"):  # a further wrapped dict
        if isinstance(sd.get(k), dict):
            sd = sd[k]
    return {k.removeprefix("module.").removeprefix("_orig_mod."): tuple(v.shape)
            for k, v in sd.items() if hasattr(v, "shape")}


def inspect_weights(path: str, model_name: Optional[str] = None) -> WeightsInfo:
    """Describe the weights file `path` (see the module docstring). Raises FileNotFoundError,
    UnsafeCheckpointError (pickled objects) or KeyError (no model weights in it)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    ckpt = None if path.endswith(".safetensors") else load_checkpoint(path)
    info = WeightsInfo(path=path, kind="weights")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model_name"), str):
        info.kind = "checkpoint"
        info.model_name = ckpt["model_name"]
        info.model_args = dict(ckpt.get("model_kwargs") or {})
        data = ((ckpt.get("config") or {}).get("data") or {})
        if data:
            c = data.get("in_chans", info.model_args.get("in_chans", 3))
            info.data = {"input_size": (c, data["img_size"], data["img_size"])} if data.get("img_size") else {}
            info.data.update({k: data[k] for k in ("mean", "std", "crop_pct", "interpolation") if k in data})
    else:
        exported = read_export_config(path)
        if exported:
            info.kind = "export"
            info.model_name = exported.get("architecture")
            info.model_args = dict(exported.get("model_args") or {})
            pcfg = exported.get("pretrained_cfg") or {}
            info.data = {k: pcfg[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation") if k in pcfg}
            info.label_names = pcfg.get("label_names")
    info.model_args = {k: v for k, v in info.model_args.items() if k not in _RUNTIME_ARGS}
    if "input_size" in info.data:
        info.data["input_size"] = tuple(info.data["input_size"])
    shapes = _shapes(path, ckpt)
    classifier, first_conv = _names(model_name or info.model_name)
    head = shapes.get(classifier + ".weight")
    info.num_classes = head[0] if head else 0
    conv = shapes.get(first_conv + ".weight") if first_conv else None
    if conv is not None and len(conv) == 4:
        info.in_chans = conv[1]
    return info


def _same(a: Any, b: Any) -> bool:
    norm = (lambda x: list(x) if isinstance(x, (list, tuple)) else x)
    return norm(a) == norm(b)


def merge_model_args(name: str, kwargs: Dict[str, Any], info: Optional[WeightsInfo]):
    """The weights' model args overridden by `kwargs` -> (merged kwargs, [(key, weights' value, new value)]
    for each arg `kwargs` changes). Weights saved for another model name contribute nothing."""
    if info is None or not info.model_args or (info.model_name and info.model_name != name):
        return dict(kwargs), []
    merged = dict(info.model_args)
    merged.update(kwargs)
    changed = [(k, info.model_args[k], v) for k, v in kwargs.items()
               if k in info.model_args and not _same(info.model_args[k], v)]
    return merged, changed


def pretrained_overlay(name: str, info: WeightsInfo) -> Dict[str, Any]:
    """timm's pretrained_cfg_overlay describing the file as it is: timm keeps a classifier whose width
    matches the model's and resets (with a warning from the model's filter) one that does not."""
    import timm
    default = timm.get_pretrained_cfg(name)
    input_size = tuple(info.data.get("input_size") or (default.input_size if default else (3, 224, 224)))
    overlay: Dict[str, Any] = {"file": info.path, "num_classes": info.num_classes}
    if info.in_chans is not None:
        input_size = (info.in_chans, *input_size[1:])
    overlay["input_size"] = input_size
    if info.label_names:
        overlay["label_names"] = info.label_names
    return overlay
