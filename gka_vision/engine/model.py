"""Building the model of a run: ``timm.create_model`` with the config's kwargs, fine-tuning from a weights file
(``model.pretrained`` / eval.py's ``--weights``), and bad model arguments turned into one-line user errors."""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

from .config import TrainConfig, UserError
from .pretrained import inspect_weights, merge_model_args, pretrained_overlay

# create_model kwargs of the run, not of the architecture (training regularisation, the Triton kernels' tuning):
# left out of the exported model args
RUNTIME_KWARGS = ("drop_path_rate", "drop_rate", "kernel_config")


def model_kwargs(cfg: TrainConfig, num_classes: int) -> dict:
    kw = dict(cfg.model.kwargs)
    kw.update(num_classes=num_classes, in_chans=cfg.data.in_chans)
    if cfg.model.drop_path > 0:
        kw["drop_path_rate"] = cfg.model.drop_path
    if cfg.model.drop_rate > 0:
        kw["drop_rate"] = cfg.model.drop_rate
    return kw


def create_model(name: str, kwargs: dict, pretrained: Optional[str] = None, info=None) -> torch.nn.Module:
    """timm.create_model; ``pretrained`` (a weights file) goes through timm's pretrained path with an
    overlay that describes the file as it is (its classifier width and input channels, read from the
    tensors), so a matching head is kept and a different one reset; the model's filter logs a warning for
    every head reset or shape adaptation. ``info``: the file's ``inspect_weights`` result, if already read."""
    import timm
    import gka_vision  # noqa: F401  (registers the GKA families with timm)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: not registered in timm (GKA models: "
                         f"{timm.list_models('gka*')})")
    if pretrained is None:
        return timm.create_model(name, **kwargs)
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"model.pretrained {pretrained!r} does not exist")
    if info is None:
        info = inspect_weights(pretrained, name)  # refuses pickled objects before timm reads the file
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=pretrained_overlay(name, info), **kwargs)


def pretrained_model_kwargs(name: str, kwargs: dict, pretrained: Optional[str], say=print) -> dict:
    """Fine-tuning from ``model.pretrained``: the model args stored with the weights (training checkpoint
    or config.json), overridden by the run's own ``kwargs``; prints what came from the file and a warning
    line for each arg the run changes."""
    if not pretrained:
        return kwargs
    info = inspect_weights(pretrained, name)
    if info.model_name and info.model_name != name:
        say(f"warning: model.pretrained {pretrained} was saved from model {info.model_name!r}; building "
            f"{name!r} with the config's model args only")
        return kwargs
    merged, changed = merge_model_args(name, kwargs, info)
    taken = {k: v for k, v in merged.items() if k not in kwargs}
    if taken:
        say(f"model.pretrained: model args from {pretrained}: " + ", ".join(f"{k}={v!r}" for k, v in taken.items()))
    for k, old, new in changed:
        say(f"warning: model.pretrained: {k}={new!r} (run config) instead of the weights' {k}={old!r}")
    return merged


def pretrained_cfg_for(model: torch.nn.Module, cfg: TrainConfig, num_classes: int) -> dict:
    """The model's pretrained_cfg describing the run's data (class count, input size, preprocessing), with
    the default weights' location removed: what an export writes beside the weights."""
    pc = dict(getattr(model, "pretrained_cfg", {}) or {})
    pc.update(
        num_classes=num_classes, input_size=(cfg.data.in_chans, cfg.data.img_size, cfg.data.img_size),
        mean=tuple(cfg.data.mean), std=tuple(cfg.data.std), crop_pct=cfg.data.crop_pct,
        interpolation=cfg.data.interpolation,
    )
    for k in ("file", "url", "hf_hub_id", "hf_hub_filename", "source"):
        pc.pop(k, None)
    return pc


@contextlib.contextmanager
def model_build_errors(name: str, kwargs: dict):
    """What a bad model argument raises while the model is built (an unknown kwarg, an image size the
    patch does not divide, a width the heads do not divide, GKA solver options out of range, a missing
    weights file or one that does not fit) becomes a UserError naming the model: one line, exit code 2."""
    try:
        yield
    except UserError:
        raise
    except (TypeError, ValueError, AssertionError, KeyError, FileNotFoundError) as e:
        raise UserError(f"model {name!r}: {one_line(e)} (model kwargs {kwargs})") from None
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):
            raise
        raise UserError(f"model {name!r}: the weights do not fit the model built with kwargs {kwargs}: "
                        f"{one_line(e)}") from None


def one_line(e: BaseException, limit: int = 600) -> str:
    """An exception's message on one line, cut at ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " ..."
