"""The webdataset pipeline: corrupt samples counted and skipped, rank/worker splitting, epoch lengths."""
import io
import tarfile

import numpy as np
import pytest
import torch

from gka_vision.data.pipeline import ShardDataset, SkipCounter, expand_urls
from gka_vision.data.shards import Sample, _write_shard

from fashion_mnist import add_member, bundled_samples, write_shard_with_bad_samples  # tests/fashion_mnist.py

torch.set_num_threads(1)
to_tensor = lambda im: torch.from_numpy(np.array(im, dtype=np.uint8))  # noqa: E731


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    """One shard with 6 good samples and 4 bad ones, plus a shard cut off in the middle."""
    d = tmp_path_factory.mktemp("bad")
    pairs = bundled_samples("test", 12)
    write_shard_with_bad_samples(d / "bad-000000.tar", pairs, 6)
    # a tar file whose second member is cut off mid-way (a shard killed during copy)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, (png, y) in enumerate(pairs[9:12]):
            add_member(tar, f"cut{i}.png", png)
            add_member(tar, f"cut{i}.cls", str(y).encode())
    raw = buf.getvalue()
    (d / "bad-000001.tar").write_bytes(raw[:1024 + 700])  # first sample's png header + part of its data
    return d


def test_corrupt_samples_are_counted_and_skipped(bad_shards):
    urls = [str(bad_shards / "bad-000000.tar"), str(bad_shards / "bad-000001.tar")]
    skips = SkipCounter()
    ds = ShardDataset(urls, to_tensor, 4, train=False, in_chans=1, skip_counter=skips)
    with pytest.warns(RuntimeWarning, match="skipping a corrupt"):
        ys = [y for _, yb in ds for y in yb.tolist()]
    assert len(ys) == 6  # exactly the good samples
    assert skips.count >= 5  # 4 bad samples + the truncated shard (1 or 2 errors, as tarfile reports them)


def test_training_stream_survives_corrupt_shards(bad_shards):
    urls = [str(bad_shards / "bad-000000.tar"), str(bad_shards / "bad-000001.tar")]
    skips = SkipCounter(max_warnings=0)
    ds = ShardDataset(urls, to_tensor, 4, train=True, num_samples=16, in_chans=1, skip_counter=skips,
                      shuffle_buffer=4)
    batches = list(ds)  # resampled stream: 16 samples' worth of batches despite the bad data
    assert len(batches) == len(ds) == 4 and all(b[0].shape == (4, 28, 28) for b in batches)
    assert skips.count > 0


def test_all_corrupt_training_data_fails_instead_of_hanging(tmp_path):
    with tarfile.open(tmp_path / "x-0.tar", "w") as tar:
        add_member(tar, "a.png", b"garbage")
        add_member(tar, "a.cls", b"0")
    ds = ShardDataset([str(tmp_path / "x-0.tar")], to_tensor, 2, train=True, num_samples=10, in_chans=1,
                      skip_counter=SkipCounter(max_warnings=0))
    with pytest.raises(RuntimeError, match="no readable sample"):
        list(ds)


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """60 real samples in 5 shards of uneven size, each sample tagged by its index in its label slot."""
    d = tmp_path_factory.mktemp("uneven")
    pairs = bundled_samples("train", 60)
    # label = sample id, so a test can tell exactly which samples each rank read
    samples = [Sample(f"s{i:03d}", png, "png", i) for i, (png, _) in enumerate(pairs)]
    # uneven shards: 20 / 12 / 12 / 10 / 6 samples
    bounds = [0, 20, 32, 44, 54, 60]
    names = []
    for k in range(5):
        name = f"uneven-{k:06d}.tar"
        _write_shard(d / name, samples[bounds[k]:bounds[k + 1]])
        names.append(str(d / name))
    return d, names


def _rank_batches(monkeypatch, urls, rank, world, epoch, **kw):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    ds = ShardDataset(urls, to_tensor, 5, in_chans=1, seed=7, **kw)
    ds.set_epoch(epoch)
    return ds, list(ds)


def test_train_split_is_equal_length_and_disjoint_per_rank(monkeypatch, uneven_shards):
    _, urls = uneven_shards
    seen = []
    for rank in range(2):
        ds, batches = _rank_batches(monkeypatch, urls, rank, 2, 0, train=True, num_samples=30, shuffle_buffer=8)
        assert len(batches) == len(ds) == 3  # ceil(30 / (5 * 2)): equal on every rank, whatever the shard sizes
        seen.append([y for _, yb in batches for y in yb.tolist()])
    # each rank reads its own shards of the epoch's permutation: no sample on both ranks
    assert not set(seen[0]) & set(seen[1])
    # same (seed, epoch, rank) -> same data; another epoch -> another order
    _, again = _rank_batches(monkeypatch, urls, 0, 2, 0, train=True, num_samples=30, shuffle_buffer=8)
    assert [y for _, yb in again for y in yb.tolist()] == seen[0]
    _, other = _rank_batches(monkeypatch, urls, 0, 2, 1, train=True, num_samples=30, shuffle_buffer=8)
    assert [y for _, yb in other for y in yb.tolist()] != seen[0]


def test_more_ranks_than_shards_never_starves(monkeypatch, uneven_shards):
    _, urls = uneven_shards
    for rank in range(8):  # 8 ranks, 5 shards: every rank still gets its batches
        ds, batches = _rank_batches(monkeypatch, urls, rank, 8, 0, train=True, num_samples=60, shuffle_buffer=4)
        assert len(batches) == len(ds) == 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_reads_every_sample_exactly_once(monkeypatch, uneven_shards, world):
    _, urls = uneven_shards
    lengths = [20, 12, 12, 10, 6]
    ys = []
    for rank in range(world):
        ds, batches = _rank_batches(monkeypatch, urls, rank, world, 0, train=False, shard_lengths=lengths)
        assert len(batches) == len(ds)
        ys += [y for _, yb in batches for y in yb.tolist()]
    assert sorted(ys) == list(range(60))


def test_validation_with_dataloader_workers(monkeypatch, uneven_shards):
    _, urls = uneven_shards
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ds = ShardDataset(urls, to_tensor, 5, train=False, in_chans=1, num_workers=2,
                      shard_lengths=[20, 12, 12, 10, 6])
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(ds)
    assert sorted(y for _, yb in batches for y in yb.tolist()) == list(range(60))


def test_pattern_with_count(uneven_shards):
    d, urls = uneven_shards
    got, lengths, num = expand_urls(str(d), "uneven-{000000..000004}.tar|60")
    assert got == urls and num == 60 and lengths is None
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_urls(str(d), "uneven-{000000..000009}.tar")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_urls(str(d / "nope"), "train")
