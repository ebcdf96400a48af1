"""Checkpoints: atomic writes, code-free loading, timm-loadable export, fine-tuning through timm."""
import errno
import json
import os
import random

import numpy as np
import pytest
import timm
import torch

from gka_vision.engine.checkpoint import (
    NoSpaceError, UnsafeCheckpointError, export_weights, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from gka_vision.engine.model import create_model

torch.set_num_threads(1)
NAME = "gka_tiny_patch16_224"
TINY = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, num_iter=3, backend="torch")


class Payload:
    """Stands for an arbitrary pickled object (pickle would call into its class when loading)."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):  # the process dies half-way through writing
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.ones(3))
    assert not (tmp_path / "last.pth.tmp").exists()


def test_pickled_object_is_refused(tmp_path, capsys):
    model = timm.create_model(NAME, num_classes=10, **TINY)
    bad = tmp_path / "bad.pth"
    torch.save({"model": model.state_dict(), "extra": Payload()}, bad)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*pickled Python objects"):
        load_checkpoint(bad)
    with pytest.raises(UnsafeCheckpointError):  # the fine-tuning path refuses it too
        create_model(NAME, dict(TINY, num_classes=10), str(bad))
    assert "this must never run" not in capsys.readouterr().out
    ok = tmp_path / "ok.pth"
    torch.save({"model": model.state_dict()}, ok)
    assert set(load_checkpoint(ok)["model"]) == set(model.state_dict())


def test_rng_state_roundtrip(tmp_path):
    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pth")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=10, **TINY).eval()
    out = tmp_path_factory.mktemp("export")
    pcfg = dict(model.pretrained_cfg, num_classes=10, input_size=(1, 28, 28), mean=(0.286,), std=(0.353,))
    path = export_weights(model.state_dict(), out, model_name=NAME, pretrained_cfg=pcfg,
                          model_args=dict(TINY, num_classes=10))
    return model, path


def test_export_loads_through_timm_pretrained(exported):
    model, path = exported
    assert path.suffix == ".safetensors" and (path.parent / "config.json").exists()
    x = torch.randn(2, 1, 28, 28)
    # the overlay must state the file's class count, else timm treats the head as foreign and resets it;
    # pretrained_cfg.json next to the weights holds all of it
    pcfg = json.loads((path.parent / "pretrained_cfg.json").read_text())
    assert pcfg["num_classes"] == 10 and pcfg["input_size"] == [1, 28, 28]
    loaded = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                               num_classes=10, **TINY).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    via_dir = timm.create_model(f"local-dir:{path.parent}", pretrained=True).eval()  # config.json: model args
    with torch.no_grad():
        assert torch.allclose(via_dir(x), model(x), atol=1e-6)
    assert via_dir.pretrained_cfg["mean"] == (0.286,) or list(via_dir.pretrained_cfg["mean"]) == [0.286]


def test_finetune_resets_head_and_resizes_pos_embed(exported):
    model, path = exported
    kw = dict(TINY, img_size=56, num_classes=5)
    ft = create_model(NAME, kw, str(path))
    sd, src = ft.state_dict(), model.state_dict()
    head = [k for k in src if k.startswith("head")]
    assert head and all(sd[k].shape[0] == 5 for k in head if sd[k].ndim >= 1)  # new classifier
    pos = [k for k in src if "pos_embed" in k]
    assert pos and all(sd[k].shape != src[k].shape for k in pos)  # 4x4 grid -> 8x8 grid
    # everything else came from the file
    same = [k for k in src if k not in head and k not in pos]
    assert same and all(torch.equal(sd[k], src[k]) for k in same)
    with torch.no_grad():
        assert ft(torch.randn(2, 1, 56, 56)).shape == (2, 5)
    # same class count: the head is kept
    keep = create_model(NAME, dict(TINY, num_classes=10), str(path))
    assert all(torch.equal(keep.state_dict()[k], src[k]) for k in src)


def test_optimizer_groups_no_decay_and_layer_decay():
    from gka_vision.engine.config import OptimConfig
    from gka_vision.engine.optim import build_optimizer
    model = timm.create_model(NAME, num_classes=10, **dict(TINY, depth=3))
    names = {id(p): n for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05), 1e-3)
    no_wd = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    nwd = model.no_weight_decay()
    listed = {n for n in names.values() if n in nwd or n.split(".")[-1] in nwd}
    assert len(listed) > 3 and listed <= no_wd  # pos_embed and the mixers' gate parameters
    assert "head.weight" not in no_wd and "head.bias" in no_wd
    ld = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05, layer_decay=0.5), 1e-3)
    scales = sorted({g["lr_scale"] for g in ld.param_groups})
    assert len(scales) >= 4 and scales[-1] == 1.0 and scales[0] < 0.1  # stem << blocks << head
    head_scale = {g["lr_scale"] for g in ld.param_groups for p in g["params"] if names[id(p)] == "head.weight"}
    assert head_scale == {1.0}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_full_disk_keeps_previous_checkpoint_and_says_so(tmp_path):
    """A real ENOSPC from the kernel: the temp file is a link to /dev/full, where every write fails with
    ENOSPC (torch's own file writer turned this into `basic_ios::clear: iostream error`)."""
    path = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    os.symlink("/dev/full", tmp_path / "last.pth.tmp")
    with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path}") as e:
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert e.value.errno == errno.ENOSPC and "\n" not in str(e.value) and "last.pth" in str(e.value)
    assert not os.path.lexists(tmp_path / "last.pth.tmp")  # the partial file is removed
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.ones(1000))  # the previous checkpoint is kept


def test_full_disk_during_save_and_export_is_reported(tmp_path, monkeypatch):
    """The same through a writer that raises OSError(ENOSPC) part-way, for checkpoints and for the export."""
    path = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1}, path)

    def full_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 some bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_save)
    with pytest.raises(NoSpaceError, match="no space left on"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and sorted(os.listdir(tmp_path)) == ["last.pth"]

    model = timm.create_model(NAME, num_classes=10, **TINY)
    out = tmp_path / "weights"
    export_weights(model.state_dict(), out, model_name=NAME, pretrained_cfg=dict(num_classes=10))
    before = (out / "model.safetensors").read_bytes()
    import builtins
    real_open = builtins.open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, b):
            self.f.write(b[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return FullFile(f) if str(file).endswith(".tmp") and "w" in mode else f

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(NoSpaceError, match=f"no space left on {out}"):
        export_weights({k: v + 1 for k, v in model.state_dict().items()}, out, model_name=NAME,
                       pretrained_cfg=dict(num_classes=10))
    monkeypatch.undo()
    assert (out / "model.safetensors").read_bytes() == before
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_exported_files_are_group_readable(tmp_path):
    """model.safetensors gets the same mode as config.json (safetensors' own writer made it 0600)."""
    old = os.umask(0o022)
    try:
        model = timm.create_model(NAME, num_classes=10, **TINY)
        path = export_weights(model.state_dict(), tmp_path, model_name=NAME, pretrained_cfg=dict(num_classes=10))
        save_checkpoint({"model": model.state_dict()}, tmp_path / "last.pth")
    finally:
        os.umask(old)
    modes = {p: os.stat(tmp_path / p).st_mode & 0o777 for p in
             ("model.safetensors", "config.json", "pretrained_cfg.json", "last.pth")}
    assert set(modes.values()) == {0o644}, modes
    assert timm.create_model(NAME, pretrained=True, num_classes=10, **TINY,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=10)) is not None
