"""eval.py on the bundled data: accuracy through timm's pretrained path, FLOPs with the GKA handle, throughput."""
import json
import os
import sys
from pathlib import Path

import pytest
import timm
import torch

from gka_vision.engine.checkpoint import export_weights
from gka_vision.engine.flops import count_flops, custom_op_handles
from gka_vision.engine.loop import evaluate
from gka_vision.engine.config import BUNDLED_ROOT, DataConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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
