"""What a training epoch reads: every sample once before any repeat (also with a shuffle buffer larger
than the data set), resampling only when asked, bad samples (corrupt, label out of range, cut-off
shards) skipped, named and counted once each, and a shuffle buffer that holds encoded bytes."""
import json
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import torch

from gka_vision.data.loader import build_train_loader, build_val_loader, val_coverage_warning
from gka_vision.data.order import pass_order
from gka_vision.data.pipeline import ShardDataset, SkipCounter
from gka_vision.data.shards import Sample, _update_info, _write_shard

from epoch_order import check_no_repeat_before_all_seen  # tests/epoch_order.py
from fashion_mnist import (  # tests/fashion_mnist.py
    REPO, add_member, bundled_samples, tiny_cfg, write_id_shards, write_shard_with_bad_samples,
)

torch.set_num_threads(1)
to_tensor = lambda im: torch.from_numpy(np.array(im, dtype=np.uint8))  # noqa: E731
LENGTHS = [20, 12, 12, 10, 6, 1, 9]  # 70 samples in 7 uneven shards


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory):
    """70 real images in 7 uneven shards; the label slot holds each sample's id."""
    return write_id_shards(tmp_path_factory.mktemp("ids"), "ids", LENGTHS)


def _ids(batches):
    return [[int(y) for y in yb] for _, yb in batches]


def _rank_batches(monkeypatch, urls, rank, world, epoch, workers=0, **kw):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    ds = ShardDataset(urls, to_tensor, kw.pop("batch_size", 5), in_chans=1, seed=3, train=True,
                      num_workers=workers, **kw)
    ds.set_epoch(epoch)
    if workers == 0:
        return ds, _ids(ds)
    return ds, _ids(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))


@pytest.mark.parametrize("buffer", [4, 1000])  # 1000: the buffer holds more than the whole data set
def test_one_epoch_sees_every_sample_before_any_repeat(monkeypatch, id_shards, buffer):
    n = sum(LENGTHS)
    for epoch in (0, 1):
        _, b = _rank_batches(monkeypatch, id_shards, 0, 1, epoch, num_samples=n, shard_lengths=LENGTHS,
                             shuffle_buffer=buffer)
        assert len(b) == 14 and sorted(y for x in b for y in x) == list(range(n))  # exactly one pass
    # longer than the data set: passes follow each other, each one complete before the next begins
    _, b = _rank_batches(monkeypatch, id_shards, 0, 1, 0, num_samples=3 * n, shard_lengths=LENGTHS,
                         shuffle_buffer=buffer)
    flat = [y for x in b for y in x]
    for p in range(3):
        assert sorted(flat[p * n:(p + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n:2 * n]  # a new order in each pass


def test_ranks_and_workers_together_see_every_sample_before_any_repeat(monkeypatch, id_shards):
    """2 ranks x 2 DataLoader workers: the steps of both ranks, in order, cover the data set once
    before any sample comes back (the epoch has 2 steps more than one pass needs)."""
    n, world = sum(LENGTHS), 2
    per_rank = []
    for rank in range(world):
        ds, b = _rank_batches(monkeypatch, id_shards, rank, world, 0, workers=2, num_samples=n,
                              shard_lengths=LENGTHS, shuffle_buffer=1000)
        assert len(b) == len(ds) == 8  # ceil(70 / (5 * 2)) = 7 steps, rounded up to the 2 workers
        per_rank.append(b)
    steps = [per_rank[r][k] for k in range(8) for r in range(world)]
    check_no_repeat_before_all_seen(steps, n)
    assert not set(y for b in per_rank[0][:7] for y in b) & set(y for b in per_rank[1][:7] for y in b)


def test_without_shard_lengths_each_worker_reads_its_shards_once_before_again(monkeypatch, id_shards):
    n = sum(LENGTHS)
    _, b = _rank_batches(monkeypatch, id_shards, 0, 1, 0, num_samples=n, shuffle_buffer=1000)
    check_no_repeat_before_all_seen(b, n)


def test_resampling_only_when_asked(monkeypatch, id_shards):
    orders = [pass_order(7, 0, 0, p) for p in range(20)]
    assert all(sorted(o) == list(range(7)) for o in orders)
    drawn = [pass_order(7, 0, 0, p, resample=True) for p in range(20)]
    assert any(len(set(o)) < 7 for o in drawn) and drawn == [pass_order(7, 0, 0, p, True) for p in range(20)]
    n = sum(LENGTHS)
    _, b = _rank_batches(monkeypatch, id_shards, 0, 1, 0, num_samples=n, shard_lengths=LENGTHS, resample=True,
                         shuffle_buffer=1000)
    assert len(b) == 14 and len({y for x in b for y in x}) < n  # shards drawn with replacement


# ---------------------------------------------------------------------------- bad samples

@pytest.fixture(scope="module")
def bad_set(tmp_path_factory):
    """A 10-class shard folder: one shard with 8 good and 6 bad samples, one good shard of 6."""
    d = tmp_path_factory.mktemp("badset")
    pairs = bundled_samples("test", 20)
    write_shard_with_bad_samples(d / "train-000000.tar", pairs, 8, extra=[
        ("label12.png", pairs[11][0]), ("label12.cls", b"12"),  # out of range for 10 classes
        ("labelneg.png", pairs[12][0]), ("labelneg.cls", b"-1")])
    _write_shard(d / "train-000001.tar", [Sample(f"ok{i}", png, "png", y) for i, (png, y) in enumerate(pairs[14:20])])
    classes = [str(c) for c in range(10)]
    _update_info(d, "train", {"name": "train", "num_samples": 20, "filenames": ["train-000000.tar", "train-000001.tar"],
                              "shard_lengths": [14, 6]}, classes)
    return d


def _data_cfg(root, **kw):
    from gka_vision.engine.config import DataConfig
    base = dict(root=str(root), img_size=28, in_chans=1, mean=[0.5], std=[0.5], crop_pct=1.0, num_workers=0,
                batch_size=4, shuffle_buffer=100, val_split="train")
    base.update(kw)
    return DataConfig(**base)


def test_labels_out_of_range_are_skipped_naming_the_shard(bad_set):
    from gka_vision.engine.config import AugConfig
    dc = _data_cfg(bad_set)
    skips = SkipCounter()
    loader, _ = build_train_loader(dc, AugConfig(), str(bad_set), seed=0, skip_counter=skips)
    with pytest.warns(RuntimeWarning) as rec:
        ys = [y for _, yb in loader for y in yb.tolist()]
    msgs = " | ".join(str(w.message) for w in rec)
    assert "label 12 is out of range for 10 classes" in msgs and "label -1 is out of range" in msgs
    assert "train-000000.tar" in msgs
    assert all(0 <= y < 10 for y in ys) and len(ys) == len(loader) * 4
    vskips = SkipCounter(max_warnings=0)
    vloader, _ = build_val_loader(dc, str(bad_set), "train", skip_counter=vskips)
    vys = [y for _, yb in vloader for y in yb.tolist()]
    assert len(vys) == 14 and all(0 <= y < 10 for y in vys) and vskips.count == 6


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_count_counts_each_bad_sample_once(bad_set, workers):
    """6 bad samples, read again in 3 passes of each of 3 epochs (by either DataLoader worker): counted as 6."""
    skips = SkipCounter(max_warnings=0)
    urls = [str(bad_set / "train-000000.tar"), str(bad_set / "train-000001.tar")]
    ds = ShardDataset(urls, to_tensor, 4, train=True, num_samples=60, shard_lengths=[14, 6], in_chans=1,
                      num_classes=10, skip_counter=skips, num_workers=workers)  # 60 an epoch: 3 passes over the 20
    loader = ds if workers == 0 else torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert len(list(loader)) == (15 if workers == 0 else 16)  # rounded up to the workers
    assert skips.count == 6


def _cut_shard(d, n=50, cut_in_header_of=27):
    """A shard of ``n`` samples cut inside the tar header of sample ``cut_in_header_of``."""
    pairs = bundled_samples("test", n)
    samples = [Sample(f"c{i:03d}", png, "png", y) for i, (png, y) in enumerate(pairs)]
    path = d / "cut-000000.tar"
    _write_shard(path, samples)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    offset = members[2 * cut_in_header_of].offset + 100  # inside the header of the sample's first member
    raw = path.read_bytes()
    path.write_bytes(raw[:offset])
    _update_info(d, "test", {"name": "test", "num_samples": n, "filenames": [path.name], "shard_lengths": [n]},
                 [str(c) for c in range(10)])
    return path


def test_truncated_shard_is_reported_and_counted(tmp_path):
    path = _cut_shard(tmp_path)
    dc = _data_cfg(tmp_path, val_split="test")
    skips = SkipCounter()
    loader, ds = build_val_loader(dc, str(tmp_path), skip_counter=skips)
    with pytest.warns(RuntimeWarning, match=r"cut-000000.tar.*27 of the 50 samples"):
        ys = [y for _, yb in loader for y in yb.tolist()]
    assert len(ys) == 27 and skips.count == 23
    msg = val_coverage_warning(ds, len(ys))
    assert msg is not None and "27 of the 50" in msg
    assert val_coverage_warning(ds, 50) is None
    # without recorded lengths the cut is still seen (the archive does not end with its zero block)
    skips2 = SkipCounter(max_warnings=0)
    ds2 = ShardDataset([str(path)], to_tensor, 8, train=False, in_chans=1, skip_counter=skips2)
    with pytest.warns(RuntimeWarning, match="cut-000000.tar.*(truncated|cut)"):
        assert sum(len(yb) for _, yb in ds2) == 27
    assert skips2.count == 1
    # training on it: the missing samples are counted once, however often the shard is read
    skips3 = SkipCounter(max_warnings=0)
    ds3 = ShardDataset([str(path)], to_tensor, 8, train=True, num_samples=100, shard_lengths=[50], in_chans=1,
                       skip_counter=skips3)
    with pytest.warns(RuntimeWarning, match="cut-000000.tar"):
        assert len(list(ds3)) == 13
    assert skips3.count == 23


# ---------------------------------------------------------------------------- buffer memory

MEMORY_SCRIPT = textwrap.dedent(r"""
    import io, json, os, sys, tarfile
    import numpy as np
    import torch
    from PIL import Image
    sys.path.insert(0, sys.argv[2])
    from gka_vision.data.pipeline import ShardDataset
    from gka_vision.data.shards import Sample, _write_shard

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    d, n = sys.argv[1], int(sys.argv[3])
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):  # ImageNet-sized (500x375) noisy JPEGs, ~100 KB each
        base = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((500, 375), Image.BICUBIC), np.float32)
        img += rng.normal(0, 20, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        samples.append(Sample(f"j{i:05d}", buf.getvalue(), "jpg", i % 10))
    encoded = sum(len(s.image) for s in samples)
    from pathlib import Path
    _write_shard(Path(d) / "big-000000.tar", samples)
    del samples, buf, img
    at = {}
    def transform(im):
        if "full" not in at:
            at["full"] = rss()  # first sample out of the buffer: the buffer holds all n samples now
        return torch.zeros(1)
    ds = ShardDataset([os.path.join(d, "big-000000.tar")], transform, n, train=True, num_samples=n,
                      shard_lengths=[n], shuffle_buffer=n, in_chans=3)
    # warm up the decoder and the tar reader on a few samples before the baseline
    ds2 = ShardDataset([os.path.join(d, "big-000000.tar")], lambda im: torch.zeros(1), 2, train=True, num_samples=2,
                       shard_lengths=[n], shuffle_buffer=1, in_chans=3)
    list(ds2)
    base = rss()
    next(iter(ds))
    print(json.dumps({"encoded": encoded, "growth": at["full"] - base}))
""")


@pytest.mark.slow
def test_shuffle_buffer_costs_the_encoded_bytes(tmp_path):
    """A buffer of N ImageNet-sized JPEGs grows the process by about their size on disk (decoded they
    would take 562 KB each, 5-6x more)."""
    n = 300
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(REPO), str(n)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["encoded"] / n > 60_000  # ImageNet-like sizes
    assert res["growth"] <= 1.5 * res["encoded"], res


def test_training_run_skips_bad_labels_and_counts_each_bad_sample_once(tmp_path, capsys):
    """Issue 12, defects 4 and 5 through train.py's engine: labels 12 and -1 in a 10-class set are
    skipped (no IndexError), every bad sample is counted once per run (not once per read), and the
    validation that saw fewer images than the split holds says so."""
    from gka_vision.engine.trainer import run
    d = tmp_path / "data"
    d.mkdir()
    pairs = bundled_samples("train", 60)
    with tarfile.open(d / "train-000000.tar", "w") as tar:
        for i, (png, y) in enumerate(pairs[:30]):
            add_member(tar, f"a{i:03d}.png", png)
            add_member(tar, f"a{i:03d}.cls", str(y).encode())
        for name, label in (("l12", b"12"), ("lneg", b"-1")):
            add_member(tar, f"{name}.png", pairs[30][0])
            add_member(tar, f"{name}.cls", label)
        add_member(tar, "garbage.png", b"not an image")
        add_member(tar, "garbage.cls", b"3")
    _write_shard(d / "train-000001.tar", [Sample(f"b{i:03d}", png, "png", y) for i, (png, y) in enumerate(pairs[30:])])
    classes = [str(c) for c in range(10)]
    _update_info(d, "train", {"name": "train", "num_samples": 63, "filenames": ["train-000000.tar", "train-000001.tar"],
                              "shard_lengths": [33, 30]}, classes)
    test = bundled_samples("test", 20)
    with tarfile.open(d / "test-000000.tar", "w") as tar:
        for i, (png, y) in enumerate(test):
            add_member(tar, f"t{i:03d}.png", png)
            add_member(tar, f"t{i:03d}.cls", str(y if i != 5 else 12).encode())
    _update_info(d, "test", {"name": "test", "num_samples": 20, "filenames": ["test-000000.tar"], "shard_lengths": [20]},
                 classes)
    summary = run(tiny_cfg(d, tmp_path / "out", "sched.epochs=2", "checkpoint.export=false", "data.num_classes=null"))
    rows = [r["skipped_samples"] for r in _csv(tmp_path / "out" / "epochs.csv")]
    assert rows == ["4", "4"] and summary["skipped_samples"] == 4  # 3 in train + 1 in test, each once
    assert summary["final"]["count"] == 19
    assert "validation saw 19 of the 20 samples" in capsys.readouterr().out


def _csv(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
