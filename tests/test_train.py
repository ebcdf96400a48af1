"""Training: an end-to-end run with all its outputs, resume reproducing the uninterrupted curve,
and two-process DDP on CPU (gloo) with uneven shards."""
import csv
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gka_vision.data.shards import FASHION_MNIST_CLASSES, Sample, _update_info, _write_shard
from gka_vision.engine.config import load_config
from gka_vision.engine.trainer import run
from test_data_shards import bundled_samples

torch.set_num_threads(1)
TINY_MODEL = ["model.kwargs={img_size: 28, patch_size: 7, embed_dim: 32, depth: 1, num_heads: 2, "
              "num_iter: 3, backend: torch}"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """200 real training images in 4 uneven shards (60/40/60/40) and 100 test images in 2 shards."""
    d = tmp_path_factory.mktemp("tinyfm")
    pairs = bundled_samples("train", 200)
    test = bundled_samples("test", 100)
    train = [Sample(f"tr{i:04d}", b, "png", y) for i, (b, y) in enumerate(pairs)]
    names, lengths, start = [], [], 0
    for k, n in enumerate([60, 40, 60, 40]):
        names.append(f"train-{k:06d}.tar")
        _write_shard(d / names[-1], train[start:start + n])
        lengths.append(n)
        start += n
    _update_info(d, "train", {"name": "train", "num_samples": 200, "filenames": names, "shard_lengths": lengths},
                 FASHION_MNIST_CLASSES)
    tnames = []
    for k in range(2):
        tnames.append(f"test-{k:06d}.tar")
        _write_shard(d / tnames[-1], [Sample(f"te{i:04d}", b, "png", y) for i, (b, y) in enumerate(test)][k * 50:(k + 1) * 50])
    _update_info(d, "test", {"name": "test", "num_samples": 100, "filenames": tnames, "shard_lengths": [50, 50]},
                 FASHION_MNIST_CLASSES)
    return d


def tiny_cfg(data_root, out, *extra):
    return load_config("configs/fashion_mnist/bundled.yaml" if os.path.exists("configs/fashion_mnist/bundled.yaml")
                       else str(Path(__file__).parent.parent / "configs/fashion_mnist/bundled.yaml"),
                       [f"data.root={data_root}", f"output={out}", "data.batch_size=20", "data.val_batch_size=50",
                        "data.num_workers=0", "data.shuffle_buffer=50", "sched.epochs=2", "sched.warmup_epochs=0.5",
                        "progress=false", "threads=1", *TINY_MODEL, *extra])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    common = ["ema.enabled=true", "ema.decay=0.9", "aug.mixup=0.2", "aug.cutmix=0.5", "aug.smoothing=0.1",
              "aug.re_prob=0.25", "optim.accum_steps=2"]
    full = run(tiny_cfg(tiny_data, tmp_path / "full", "verify_export=true", *common))
    # interrupted after epoch 0 (the time limit of a cluster job, say), then resumed from last.pth
    part = run(tiny_cfg(tiny_data, tmp_path / "resumed", "stop_after_epoch=0", *common))
    assert part["epochs_done"] == 1 and (tmp_path / "resumed" / "last.pth").exists()
    assert not (tmp_path / "resumed" / "weights").exists()  # unfinished runs export nothing
    resumed = run(tiny_cfg(tiny_data, tmp_path / "resumed", "checkpoint.resume=auto", *common))
    a = read_rows(tmp_path / "full" / "steps.csv")
    b = read_rows(tmp_path / "resumed" / "steps.csv")
    assert len(a) == len(b) == 2 * 5  # 10 batches of 20 per epoch, 2 micro-steps per update
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([float(r["loss"]) for r in b], [float(r["loss"]) for r in a], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([float(r["lr"]) for r in b], [float(r["lr"]) for r in a], rtol=1e-9)
    ea, eb = read_rows(tmp_path / "full" / "epochs.csv"), read_rows(tmp_path / "resumed" / "epochs.csv")
    assert [(r["val_top1"], r["ema_top1"]) for r in ea] == [(r["val_top1"], r["ema_top1"]) for r in eb]
    assert resumed["param_checksum"] == pytest.approx(full["param_checksum"], rel=1e-9)

    # the uninterrupted run's outputs
    out = tmp_path / "full"
    for f in ("config.yaml", "last.pth", "best.pth", "curves.png", "summary.json", "weights/model.safetensors",
              "weights/config.json", "weights/pretrained_cfg.json", "weights_ema/model.safetensors"):
        assert (out / f).exists(), f
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    # the exported weights, reloaded through timm's pretrained path, give the same accuracy
    assert summary["reloaded"]["top1"] == pytest.approx(summary["final"]["top1"], abs=1e-9)
    assert summary["final"]["count"] == 100


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data_root, out, result_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_cfg(data_root, out, "sched.epochs=1", "checkpoint.export=false", "device=cpu")
    summary = run(cfg)
    # the data this rank trained on: its epoch-0 stream depends only on (seed, epoch, rank)
    from gka_vision.data.loader import build_train_loader
    _, ds = build_train_loader(cfg.data, cfg.aug, str(data_root), seed=cfg.seed)
    ds.set_epoch(0)
    torch.manual_seed(0)
    hashes = []
    ds.transform = lambda im: torch.from_numpy(np.array(im))  # identify images, not augmentations
    for x, _ in ds:
        hashes += [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x]
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"summary": summary, "hashes": hashes}))


@pytest.mark.timeout(300)
def test_two_process_ddp_gloo(tiny_data, tmp_path):
    world = 2
    ctx = mp.start_processes(_ddp_worker, args=(world, _free_port(), str(tiny_data), str(tmp_path / "ddp"),
                                                str(tmp_path)), nprocs=world, join=False, start_method="spawn")
    while not ctx.join(timeout=240):  # raises if a rank fails; a hang hits the pytest timeout
        pass
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    s0, s1 = res[0]["summary"], res[1]["summary"]
    assert s0["world_size"] == s1["world_size"] == 2 and s0["updates"] == s1["updates"] == 5  # ceil(200/(20*2))
    # DDP kept the replicas identical
    assert s0["param_checksum"] == pytest.approx(s1["param_checksum"], rel=1e-9)
    # validation counted every test image once across the two ranks (all_reduce of sums)
    assert s0["final"]["count"] == s1["final"]["count"] == 100 and s0["final"]["top1"] == s1["final"]["top1"]
    h0, h1 = res[0]["hashes"], res[1]["hashes"]
    assert len(h0) == len(h1) == 100
    overlap = set(h0) & set(h1)
    assert len(overlap) <= 20, f"ranks read {len(overlap)} common images"  # at most the 4th shard's spill-over
    rows = read_rows(tmp_path / "ddp" / "steps.csv")
    assert len(rows) == 5 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_non_finite_loss_stops_training_with_a_clear_error():
    """A NaN in the data (or a diverging run) raises FloatingPointError naming where it happened,
    before the optimizer step, so the weights are not overwritten with NaN."""
    import pytest
    import torch
    from gka_vision.engine.loop import TrainState, train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    good = (torch.randn(2, 4), torch.tensor([0, 1]))
    bad = (torch.full((2, 4), float("nan")), torch.tensor([0, 1]))

    class Loader(list):
        pass

    state = TrainState(epoch=3, update=7)
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 3, update 7"):
        train_one_epoch(model, Loader([bad, good]), opt, None, torch.nn.functional.cross_entropy, state,
                        device=torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by the failed step"
