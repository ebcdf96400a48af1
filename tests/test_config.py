"""Structured config: YAML + dotlist merge, unknown keys and missing data paths give clear errors."""
import os
import sys
from pathlib import Path

import pytest

from gka_vision.engine.config import BUNDLED_ROOT, ConfigError, TrainConfig, load_config, resolve_data_root

REPO = Path(__file__).resolve().parent.parent
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
