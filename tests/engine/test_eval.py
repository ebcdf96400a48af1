"""eval.py on the bundled data: accuracy through timm's pretrained path, FLOPs with the GKA handle, throughput."""
import json
import os
import sys

import pytest
import timm
import torch

from gka_vision.engine.checkpoint import export_weights
from gka_vision.engine.flops import count_flops, custom_op_handles
from gka_vision.engine.loop import evaluate
from gka_vision.engine.config import BUNDLED_ROOT, DataConfig

from fashion_mnist import REPO, tiny_cfg  # tests/fashion_mnist.py

sys.path.insert(0, str(REPO))
import eval as eval_script  # noqa: E402  (the repo's eval.py)

torch.set_num_threads(1)
NAME = "gka_tiny_patch16_224"
TINY = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, num_iter=3, backend="torch")
MEAN, STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=10, **TINY).eval()
    out = tmp_path_factory.mktemp("w")
    pcfg = dict(model.pretrained_cfg, num_classes=10, input_size=(1, 28, 28), mean=tuple(MEAN), std=tuple(STD),
                crop_pct=1.0, interpolation="bilinear")
    path = export_weights(model.state_dict(), out, model_name=NAME, pretrained_cfg=pcfg,
                          model_args=dict(TINY, num_classes=10))
    return model, path


def test_eval_py_on_bundled_data(weights, tmp_path):
    model, path = weights
    res_file = tmp_path / "res.json"
    rc = eval_script.main(["--weights", str(path), "--workers", "0", "--batch-size", "500", "--bench-iters", "1",
                           "--bench-batch", "8", "--json", str(res_file)])
    assert rc == 0
    res = json.loads(res_file.read_text())
    assert res["model"] == NAME and res["split"] == "test" and res["count"] == 2000  # every bundled test image
    assert res["input_size"] == [1, 28, 28]
    assert res["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    # the same numbers as evaluating the in-memory model directly
    from gka_vision.data.loader import build_val_loader
    dc = DataConfig(root="bundled", img_size=28, in_chans=1, mean=MEAN, std=STD, crop_pct=1.0,
                    interpolation="bilinear", num_workers=0, batch_size=500, val_batch_size=500)
    loader, _ = build_val_loader(dc, BUNDLED_ROOT, "test")
    direct = evaluate(model, loader, device=torch.device("cpu"))
    assert res["top1"] == pytest.approx(direct["top1"]) and res["loss"] == pytest.approx(direct["loss"], rel=1e-5)
    assert res["gflops"] > 0 and res["throughput"]["img_per_s"] > 0 and res["throughput"]["peak_mem_mib"] > 0


def test_flops_count_the_gka_core(weights):
    model, _ = weights
    handles = custom_op_handles()
    assert "gka_vision::gka_scan_bidirectional" in handles  # the fvcore handle of the custom op is registered
    f = count_flops(model, (1, 28, 28))
    gka = {k: v for k, v in f["by_operator"].items() if "gka_scan" in k}
    assert gka and all(v > 0 for v in gka.values()), f["by_operator"]
    assert not any("gka_scan" in k for k in f["unsupported"])
    # the GKA term follows its own formula: dropping the handle loses exactly that part
    from gka_vision.ops.flops import gka_scan_macs
    T, H, D = 16, 2, 16  # 4x4 tokens, 2 heads of 16
    assert sum(gka.values()) * 1e9 == pytest.approx(gka_scan_macs(1, T, H, D, num_iter=3, directions=2))


def test_eval_py_errors_are_clear(tmp_path, capsys):
    assert eval_script.main(["--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert eval_script.main(["--model", NAME, "--data", str(tmp_path / "nodata")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_py_on_an_imagefolder_tree(weights, tmp_path):
    """ImageNet's val/ layout (one folder per class): the same images give the same accuracy as the shards."""
    import glob
    from gka_vision.data.shards import iter_tar_samples

    model, path = weights
    root = tmp_path / "val"
    classes = json.load(open(os.path.join(BUNDLED_ROOT, "class_index.json")))["classes"]
    n = 0
    for shard in sorted(glob.glob(os.path.join(BUNDLED_ROOT, "test-*.tar.gz"))):
        for s in iter_tar_samples(shard):
            # folder names sort in class-index order, as torchvision's ImageFolder assigns labels
            d = root / f"{int(s['cls']):02d}_{classes[int(s['cls'])].replace('/', '-')}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{s['__key__']}.png").write_bytes(s["png"])
            n += 1
    res_file = tmp_path / "res.json"
    rc = eval_script.main(["--weights", str(path), "--data", str(root), "--workers", "0", "--batch-size", "500",
                           "--no-bench", "--no-flops", "--json", str(res_file)])
    assert rc == 0
    res = json.loads(res_file.read_text())
    assert res["count"] == n == 2000
    shard_file = tmp_path / "res_shards.json"
    assert eval_script.main(["--weights", str(path), "--workers", "0", "--batch-size", "500", "--no-bench",
                             "--no-flops", "--json", str(shard_file)]) == 0
    shards = json.loads(shard_file.read_text())
    assert res["top1"] == pytest.approx(shards["top1"]) and res["loss"] == pytest.approx(shards["loss"], rel=1e-5)


# ---------------------------------------------------------------- training checkpoints (.pth) and fine-tuning

@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One epoch of train.py on 200 real images: best.pth, last.pth and the exported weights of that epoch."""
    from gka_vision.engine.trainer import run
    out = tmp_path_factory.mktemp("run")
    summary = run(tiny_cfg(tiny_data, out, "sched.epochs=1"))
    ckpt = torch.load(out / "best.pth", weights_only=True)
    return dict(data=tiny_data, out=out, summary=summary, ckpt=ckpt)


def _eval(args, tmp_path, capsys, name="res.json"):
    res_file = tmp_path / name
    rc = eval_script.main([*args, "--workers", "0", "--batch-size", "50", "--no-bench", "--no-flops",
                           "--json", str(res_file)])
    err = capsys.readouterr().err
    return rc, (json.loads(res_file.read_text()) if rc == 0 else None), err


def test_eval_py_on_a_training_checkpoint_uses_its_model_head_and_preprocessing(trained, tmp_path, capsys):
    """No --model: the checkpoint's model name, kwargs and data settings; its own head gives the accuracy
    train.py measured at that epoch (and the same as the weights exported from it)."""
    data, out, ckpt = trained["data"], trained["out"], trained["ckpt"]
    rc, res, err = _eval(["--weights", str(out / "best.pth"), "--data", str(data), "--split", "test"],
                         tmp_path, capsys)
    assert rc == 0, err
    assert res["model"] == ckpt["model_name"] and res["input_size"] == [1, 28, 28]
    assert res["count"] == 100
    assert res["top1"] == pytest.approx(ckpt["metrics"]["top1"]) and res["loss"] == pytest.approx(ckpt["metrics"]["loss"], rel=1e-5)
    rc, exp, err = _eval(["--weights", str(out / "weights" / "model.safetensors"), "--data", str(data),
                          "--split", "test"], tmp_path, capsys, "exp.json")
    assert rc == 0 and exp["top1"] == res["top1"] and exp["loss"] == pytest.approx(res["loss"], rel=1e-6)


def test_eval_py_checkpoint_with_model_and_kwargs_keeps_its_head(trained, tmp_path, capsys):
    """The issue's command: --model plus the config's kwargs (no num_classes): the 10-class head is kept
    (it was dropped for a random one: chance accuracy with exit code 0)."""
    data, out, ckpt = trained["data"], trained["out"], trained["ckpt"]
    kw = ["img_size=28", "patch_size=7", "embed_dim=32", "depth=1", "num_heads=2", "num_iter=3", "backend=torch"]
    rc, res, err = _eval(["--model", NAME, "--weights", str(out / "best.pth"), "--model-kwargs", *kw,
                          "--in-chans", "1", "--data", str(data), "--split", "test"], tmp_path, capsys)
    assert rc == 0, err
    assert res["loss"] == pytest.approx(ckpt["metrics"]["loss"], rel=1e-5)
    assert "warning" not in err  # nothing differs from the checkpoint's own args


def test_eval_py_reports_model_args_that_differ_from_the_checkpoint(trained, tmp_path, capsys):
    data, out = trained["data"], trained["out"]
    common = ["--weights", str(out / "best.pth"), "--data", str(data), "--split", "test"]
    rc, res, err = _eval([*common, "--model-kwargs", "num_iter=2"], tmp_path, capsys)
    assert rc == 0 and "--model-kwargs num_iter=2 differs from the weights' num_iter=3" in err
    # a shape-changing override: one line naming the problem and the weights' own args, exit code 2
    rc, _, err = _eval([*common, "--model-kwargs", "depth=2"], tmp_path, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "do not fit the model" in err and "saved with model args dict(" in err and "depth=1" in err
    # another class count would evaluate a freshly initialised head: refused
    rc, _, err = _eval([*common, "--num-classes", "5"], tmp_path, capsys)
    assert rc == 2 and "10-class classifier" in err and "5 classes" in err


def test_finetune_from_a_training_checkpoint_keeps_its_head_and_model_args(trained, caplog, capsys):
    """train.py model.pretrained=best.pth: the checkpoint's model args fill in what the run's config does not
    set, the head is kept for the same class count and reset, with a warning line, for another."""
    from gka_vision.engine.model import create_model, pretrained_model_kwargs
    out, ckpt = trained["out"], trained["ckpt"]
    path = str(out / "best.pth")
    kw = pretrained_model_kwargs(NAME, dict(num_classes=10, in_chans=1, img_size=28), path)
    printed = capsys.readouterr().out
    assert kw == {k: v for k, v in ckpt["model_kwargs"].items() if "drop" not in k}
    assert "model args from" in printed and "embed_dim=32" in printed and "warning" not in printed
    with caplog.at_level("WARNING"):
        same = create_model(NAME, kw, path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    for k, v in ckpt["model"].items():
        assert torch.equal(same.state_dict()[k], v), k

    kw5 = pretrained_model_kwargs(NAME, dict(num_classes=5, in_chans=1, img_size=56), path)
    printed = capsys.readouterr().out
    assert "warning: model.pretrained: num_classes=5 (run config) instead of the weights' num_classes=10" in printed
    assert "img_size=56 (run config) instead of the weights' img_size=28" in printed
    with caplog.at_level("WARNING"):
        five = create_model(NAME, kw5, path)
    msgs = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "classifier head reset: the weights have 10 classes, the model 5" in msgs
    assert "pos_embed resized (1, 4, 4, 32) -> (1, 8, 8, 32)" in msgs
    assert five.head.weight.shape == (5, 32)
