"""Checkpoints that lose nothing, and weights that timm can load.

* ``save_checkpoint``: one ``torch.save`` to ``<path>.tmp``, flushed and fsynced, then ``os.replace``;
  a run killed mid-write leaves the previous file intact, a failed write (a full disk: ``NoSpaceError``)
  removes the ``.tmp`` file and leaves the previous one too.
* ``load_checkpoint``: ``torch.load(weights_only=True)`` only; a file that carries pickled Python
  objects (anything but tensors and plain containers) is refused with ``UnsafeCheckpointError``.
* ``export_weights``: ``model.safetensors`` + ``config.json`` (timm's ``architecture`` /
  ``num_classes`` / ``pretrained_cfg`` / ``model_args`` layout) + ``pretrained_cfg.json``, loadable by
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` or
  ``timm.create_model("local-dir:<folder>")``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Optional

import numpy as np
import torch

from .config import UserError


class UnsafeCheckpointError(UserError, RuntimeError):
    """The checkpoint holds pickled objects that weights_only loading will not execute."""


class NoSpaceError(OSError):
    """A write ran out of disk space (errno ENOSPC); the file it was replacing is unchanged and no
    ``.tmp`` file is left behind."""

    def __str__(self) -> str:
        return self.strerror


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(f)`` into ``<path>.tmp`` (a Python file, so a full disk raises ENOSPC here, not as an
    opaque error inside a C++ writer), fsync, then ``os.replace`` onto ``path``. On any failure the
    ``.tmp`` file is removed and ``path`` keeps its previous content. Files get the mode of ``open``
    (0666 minus the umask), the same for weights, checkpoints and JSON."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
            raise NoSpaceError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name}: {kept} "
                                             f"and the partial {tmp.name} removed; free some space") from None
        raise
    return path


def save_checkpoint(state: Dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``state`` (tensors and plain containers only) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


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
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(e).splitlines()[0]).strip() if str(e) else type(e).__name__
        raise UnsafeCheckpointError(
            f"refusing to load {path!r}: it contains pickled Python objects, which could run code when "
            f"loaded. Only tensors and plain containers are accepted (torch.load(weights_only=True)). "
            f"Details: {detail}") from None


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
    from safetensors.torch import save as to_bytes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v.detach().contiguous().cpu()
          for k, v in state_dict.items()}
    weights = out / filename
    # serialised in memory and written through atomic_write: safetensors' own file writer makes
    # mode-0600 files and reports a full disk without naming it
    data = to_bytes(sd, metadata={"format": "pt", "architecture": model_name})
    atomic_write(weights, lambda f: f.write(data))
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
        text = json.dumps(obj, indent=1).encode()
        atomic_write(out / name, lambda f: f.write(text))
    return weights


def read_export_config(weights_path: str | os.PathLike) -> Optional[Dict[str, Any]]:
    """The ``config.json`` written next to exported weights, if any."""
    p = Path(weights_path).parent / "config.json"
    return json.loads(p.read_text()) if p.exists() else None
