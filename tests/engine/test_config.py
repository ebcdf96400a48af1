"""Structured config: YAML + dotlist merge, unknown keys and missing data paths give clear errors."""
import os
import sys
from pathlib import Path

import pytest

from gka_vision.engine.config import BUNDLED_ROOT, ConfigError, TrainConfig, load_config, resolve_data_root

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_merge_order_and_types(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("optim: {lr: 1.0e-3}\ndata: {batch_size: 32}\nmodel: {kwargs: {depth: 3}}\n")
    cfg = load_config(str(y), ["optim.lr=5e-4", "model.kwargs.embed_dim=64", "aug.scale=[0.5,1.0]"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)  # command line wins over YAML
    assert cfg.data.batch_size == 32  # YAML wins over defaults
    assert cfg.model.kwargs == {"depth": 3, "embed_dim": 64}  # free-form kwargs accept new keys
    assert cfg.aug.scale == [0.5, 1.0]


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="optim.lrr|lrr"):
        load_config(None, ["optim.lrr=1e-3"])
    y = tmp_path / "typo.yaml"
    y.write_text("data:\n  batchsize: 32\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_config(str(y))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="in_chans"):
        load_config(None, ["data.in_chans=2"])
    with pytest.raises(ConfigError, match="mean/std"):
        load_config(None, ["data.in_chans=1"])  # ImageNet's 3-value mean does not fit 1 channel
    with pytest.raises(ConfigError, match="amp"):
        load_config(None, ["amp=fp8"])


def test_missing_data_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, [f"data.root={tmp_path / 'no_such_dir'}"])
    with pytest.raises(ConfigError, match="data.root is not set"):
        load_config(None, ["data.root=null"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    assert resolve_data_root("bundled") == BUNDLED_ROOT and os.path.isdir(BUNDLED_ROOT)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_bundled_yaml_files_validate(path):
    # every shipped YAML must match the schema; data paths are filled in by the user
    cfg = load_config(str(path), ["data.root=bundled"])
    assert cfg.sched.epochs >= 1
    import timm
    import gka_vision  # noqa: F401
    assert timm.is_model(cfg.model.name), f"{path.name}: {cfg.model.name} is not registered"


def test_train_py_reports_config_errors(tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    import train  # the repo's train.py
    assert train.main(["optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key" in err and "lrr" in err
    assert train.main([f"data.root={tmp_path}/none"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train.main(["model.name=gka_tinyy_patch16_224"]) == 2
    assert "model.name 'gka_tinyy_patch16_224' is not a registered timm model" in capsys.readouterr().err
    assert train.main(["--print-config", "optim.lr=0.01"]) == 0
    assert "lr: 0.01" in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [
    ("eval_every=0", "eval_every"),
    ("log_interval=0", "log_interval"),
    ("checkpoint.save_every=0", "checkpoint.save_every"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.lr=0", "optim.lr"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.clip_grad=0", "optim.clip_grad"),
    ("sched.min_lr=-1", "sched.min_lr"),
    ("sched.warmup_lr=-1", "sched.warmup_lr"),
    ("sched.warmup_epochs=-1", "sched.warmup_epochs"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.val_batch_size=0", "data.val_batch_size"),
    ("data.img_size=0", "data.img_size"),
    ("data.crop_pct=0", "data.crop_pct"),
    ("data.crop_pct=1.5", "data.crop_pct"),
    ("data.num_classes=0", "data.num_classes"),
    ("data.shuffle_buffer=-1", "data.shuffle_buffer"),
    ("aug.hflip=1.5", "aug.hflip"),
    ("aug.mixup=-0.2", "aug.mixup"),
    ("aug.smoothing=1.0", "aug.smoothing"),
    ("model.drop_path=-0.1", "model.drop_path"),
    ("stop_after_epoch=-1", "stop_after_epoch"),
    ("time_limit_min=0", "time_limit_min"),
    ("threads=0", "threads"),
])
def test_out_of_range_values_are_errors(override, key):
    """Values that would crash later (eval_every=0: ZeroDivisionError) or train something meaningless with
    exit code 0 (stop_after_epoch=-1 exported an untrained model) are refused, naming the key."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must be"):
        load_config(None, [override])


def test_boundary_values_are_accepted():
    cfg = load_config(None, ["stop_after_epoch=0", "data.num_workers=0", "optim.weight_decay=0", "sched.min_lr=0",
                             "sched.warmup_epochs=0", "data.crop_pct=1.0", "aug.hflip=0", "time_limit_min=0.5"])
    assert cfg.stop_after_epoch == 0 and cfg.data.num_workers == 0
