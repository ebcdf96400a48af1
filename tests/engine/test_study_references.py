"""The accuracy study's reference models (configs/fashion_mnist/deit_tiny.yaml, mambaout_femto.yaml):
plain timm models trained by the study's recipe, only the model block differing from their pair's
configs; train.py trains, exports and reloads them like the project's own models."""
from pathlib import Path

import pytest

from gka_vision.engine.config import load_config, to_dict

from fashion_mnist import write_shard_folder  # tests/fashion_mnist.py

REPO = Path(__file__).resolve().parents[2]
FM = REPO / "configs" / "fashion_mnist"
STUDY = ["gka_tiny", "mamba_vim_tiny", "gkavision_tiny", "mambavision_tiny", "deit_tiny", "mambaout_femto"]


def _recipe(name):
    d = to_dict(load_config(str(FM / f"{name}.yaml"), ["data.root=bundled"]))
    d.pop("model"), d.pop("output")
    d["data"].pop("img_size")
    return d


@pytest.mark.parametrize("name", STUDY[1:])
def test_study_configs_share_one_recipe(name):
    assert _recipe(name) == _recipe("gka_tiny")


@pytest.mark.parametrize("ref,pair", [("deit_tiny", "gka_tiny"), ("mambaout_femto", "gkavision_tiny")])
def test_references_use_their_pairs_input_size(ref, pair):
    a = load_config(str(FM / f"{ref}.yaml"), ["data.root=bundled"])
    b = load_config(str(FM / f"{pair}.yaml"), ["data.root=bundled"])
    assert a.data.img_size == b.data.img_size and a.data.in_chans == b.data.in_chans == 1
    assert a.model.name in ("deit_tiny_patch16_224", "mambaout_femto")


@pytest.mark.parametrize("name,shrink", [
    ("deit_tiny", ["model.kwargs.embed_dim=32", "model.kwargs.depth=1", "model.kwargs.num_heads=2"]),
    ("mambaout_femto", ["data.img_size=64", "model.kwargs={dims: [8, 16, 24, 32], depths: [1, 1, 1, 1]}"]),
])
def test_train_py_trains_exports_and_reloads_a_plain_timm_model(tmp_path, name, shrink):
    from gka_vision.engine.trainer import run
    root = write_shard_folder(tmp_path / "data", {"train": [200], "test": [100]})
    cfg = load_config(str(FM / f"{name}.yaml"), [
        f"data.root={root}", f"output={tmp_path / 'out'}", "sched.epochs=1", "data.batch_size=20",
        "data.val_batch_size=50", "data.num_workers=0", "data.shuffle_buffer=50", "progress=false", "threads=1",
        "verify_export=true", *shrink])
    s = run(cfg)
    assert s["model"] == cfg.model.name and s["updates"] == 10 and s["final"]["count"] == 100
    assert s["reloaded"]["top1"] == pytest.approx(s["final"]["top1"], abs=1e-9)
    assert (tmp_path / "out" / "weights" / "model.safetensors").exists()
