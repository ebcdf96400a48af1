"""The ImageNet recipes in configs/imagenet/: every file loads through the real config loader, carries
its published recipe (optimizer, lr at its global batch, schedule, augmentation, EMA), says where
the recipe comes from, how large the global batch is and how the lr scales in its header, and builds
its model (on the meta device). The paper's pairs differ only in the model."""
import re
from pathlib import Path

import pytest
import torch

from gka_vision.engine.config import load_config, to_dict

REPO = Path(__file__).resolve().parents[2]
IMAGENET = sorted((REPO / "configs" / "imagenet").glob("*.yaml"))
DEIT_AUG = dict(auto_augment="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0, smoothing=0.1, re_prob=0.25)

# model, optimizer, lr, lr_base_size, global batch on 8 GPUs, weight decay, epochs, warmup, min lr, EMA decay,
# drop path, grad clip, eval crop; parameter count (M) of the published model, where there is one
MAMBAVISION = dict(opt="lamb", lr=5e-3, base=4096, global_batch=4096, wd=0.05, epochs=310, warmup=20, min_lr=5e-6,
                   ema=0.9998, drop_path=0.2, clip=5.0, crop=1.0)
VIM_T = dict(opt="adamw", lr=5e-4, base=512, global_batch=1024, wd=0.1, epochs=300, warmup=5, min_lr=1e-5,
             ema=0.99996, drop_path=0.0, clip=None, crop=0.875)
VIM_S = dict(VIM_T, lr=1e-3, global_batch=512, wd=0.05, drop_path=0.05)
DEIT_T = dict(VIM_T, wd=0.05, drop_path=0.1)
RECIPES = {
    "mambavision_tiny": dict(MAMBAVISION, model="mambavision_tiny", params=31.8),
    "gkavision_tiny": dict(MAMBAVISION, model="gkavision_tiny", params=None),
    "mamba_vim_tiny": dict(VIM_T, model="mamba_vim_tiny_patch16_224", params=7.0),
    "gka_tiny": dict(VIM_T, model="gka_tiny_patch16_224", params=None),
    "mamba_vim_small": dict(VIM_S, model="mamba_vim_small_patch16_224", params=26.0),
    "gka_small": dict(VIM_S, model="gka_small_patch16_224", params=None),
    "deit_tiny": dict(DEIT_T, model="deit_tiny_patch16_224", params=5.7),
    "gka_base": dict(DEIT_T, model="gka_base_patch16_224", drop_path=0.3, clip=5.0, params=None),
}
PAIRS = [("gkavision_tiny", "mambavision_tiny"), ("gka_tiny", "mamba_vim_tiny"), ("gka_small", "mamba_vim_small")]


def _load(name):
    return load_config(str(REPO / "configs" / "imagenet" / f"{name}.yaml"), ["data.root=bundled"])


def test_every_imagenet_config_is_a_known_recipe():
    assert sorted(p.stem for p in IMAGENET) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_carries_its_published_recipe(name):
    r, cfg = RECIPES[name], _load(name)
    o, s, a = cfg.optim, cfg.sched, cfg.aug
    assert cfg.model.name == r["model"] and cfg.data.num_classes == 1000 and cfg.data.img_size == 224
    assert (o.opt, o.lr, o.lr_base_size, o.weight_decay, o.clip_grad) == (r["opt"], r["lr"], r["base"], r["wd"], r["clip"])
    assert tuple(o.betas) == (0.9, 0.999) and o.eps == 1e-8
    assert cfg.data.batch_size * 8 * o.accum_steps == r["global_batch"]
    assert (s.epochs, s.warmup_epochs, s.min_lr, s.warmup_lr) == (r["epochs"], r["warmup"], r["min_lr"], 1e-6)
    assert cfg.ema.enabled and cfg.ema.decay == r["ema"]
    assert cfg.model.drop_path == r["drop_path"] and cfg.data.crop_pct == r["crop"]
    assert {k: getattr(a, k) for k in DEIT_AUG} == DEIT_AUG
    assert (a.scale, a.hflip, a.mixup_prob, a.mixup_switch_prob) == ([0.08, 1.0], 0.5, 1.0, 0.5)
    assert cfg.checkpoint.resume == "auto" and cfg.amp == "auto"
    # the header: its source, the global batch with how it is reached, the lr rule, what is not reproduced
    head = "\n".join(line for line in (REPO / "configs/imagenet" / f"{name}.yaml").read_text().splitlines()
                     if line.startswith("#"))
    assert re.search(r"Source: \S+/\S+", head), "no source"
    assert "Global batch = data.batch_size x GPUs x optim.accum_steps" in head
    assert f"= {r['global_batch']}" in head and "scale" in head and "linear" in head
    # the effective lr at the documented global batch is the recipe's
    assert o.lr * r["global_batch"] / o.lr_base_size == pytest.approx(
        {"lamb": 5e-3}.get(r["opt"], r["lr"] * r["global_batch"] / 512))


@pytest.mark.parametrize("a,b", PAIRS)
def test_paired_recipes_differ_only_in_the_model(a, b):
    da, db = to_dict(_load(a)), to_dict(_load(b))
    assert da["model"].pop("name") != db["model"].pop("name")
    da.pop("output"), db.pop("output")
    assert da == db


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_builds_its_model(name):
    import timm
    import gka_vision  # noqa: F401
    from gka_vision.engine.model import model_kwargs
    cfg = _load(name)
    with torch.device("meta"):
        model = timm.create_model(cfg.model.name, **model_kwargs(cfg, 1000))
    n = sum(p.numel() for p in model.parameters()) / 1e6
    want = RECIPES[name]["params"]
    if want is not None:  # the published size of the reference model
        assert n == pytest.approx(want, rel=0.06), f"{name}: {n:.2f}M params, published {want}M"
    assert model.num_classes == 1000


def test_lamb_gets_the_configs_betas_and_eps():
    """LAMB (MambaVision's optimizer) receives optim.betas / optim.eps; timm's Lamb defaults to eps 1e-6."""
    from gka_vision.engine.optim import build_optimizer
    cfg = _load("mambavision_tiny")
    opt = build_optimizer(torch.nn.Linear(4, 2), cfg.optim, 5e-3)
    assert type(opt).__name__ == "Lamb"
    assert opt.defaults["eps"] == 1e-8 and tuple(opt.defaults["betas"]) == (0.9, 0.999)
