"""Checkpoints that lose nothing, and weights that timm can load.

* ``save_checkpoint``: one ``torch.save`` to ``<path>.tmp``, flushed and fsynced, then ``os.replace``;
  a run killed mid-write leaves the previous file intact.
* ``load_checkpoint``: ``torch.load(weights_only=True)`` only; a file that carries pickled Python
  objects (anything but tensors and plain containers) is refused with ``UnsafeCheckpointError``.
* ``export_weights``: ``model.safetensors`` + ``config.json`` (timm's ``architecture`` /
  ``num_classes`` / ``pretrained_cfg`` / ``model_args`` layout) + ``pretrained_cfg.json``, loadable by
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` or
  ``timm.create_model("local-dir:<folder>")``.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint holds pickled objects that weights_only loading will not execute."""


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(state: Dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``state`` (tensors and plain containers only) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    _fsync_replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint without executing code from it."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return {"model": load_file(path, device=str(map_location))}
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {path!r}: it contains pickled Python objects, which could run code when "
            f"loaded. Only tensors and plain containers are accepted (torch.load(weights_only=True)). "
            f"Details: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def model_state_from(ckpt: Dict[str, Any], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    key = "ema" if use_ema and ckpt.get("ema") is not None else "model"
    if key not in ckpt:
        for k in ("state_dict_ema" if use_ema else "state_dict", "state_dict", "model_state"):
            if k in ckpt:
                key = k
                break
        else:
            if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
                return ckpt  # a bare state dict
            raise KeyError(f"checkpoint has no model weights (keys: {sorted(ckpt)})")
    sd = ckpt[key]
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}


# ---------------------------------------------------------------------------- RNG state

def rng_state() -> Dict[str, Any]:
    """All RNG states as tensors / plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- export for timm

def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def export_weights(
    state_dict: Dict[str, torch.Tensor],
    out_dir: str | os.PathLike,
    *,
    model_name: str,
    pretrained_cfg: Dict[str, Any],
    model_args: Optional[Dict[str, Any]] = None,
    filename: str = "model.safetensors",
) -> Path:
    """Write ``filename`` (safetensors) + ``config.json`` + ``pretrained_cfg.json`` into ``out_dir``."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v.detach().contiguous().cpu()
          for k, v in state_dict.items()}
    weights = out / filename
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "architecture": model_name})
    _fsync_replace(tmp, weights)
    cfg = _plain(dict(pretrained_cfg))
    cfg.pop("file", None)
    config = {
        "architecture": model_name,
        "num_classes": cfg.get("num_classes"),
        "num_features": cfg.pop("num_features", None),
        "pretrained_cfg": cfg,
        "model_args": _plain(model_args or {}),
    }
    for name, obj in (("config.json", config), ("pretrained_cfg.json", cfg)):
        p = out / name
        p.with_name(name + ".tmp").write_text(json.dumps(obj, indent=1))
        os.replace(p.with_name(name + ".tmp"), p)
    return weights


def read_export_config(weights_path: str | os.PathLike) -> Optional[Dict[str, Any]]:
    """The ``config.json`` written next to exported weights, if any."""
    p = Path(weights_path).parent / "config.json"
    return json.loads(p.read_text()) if p.exists() else None
