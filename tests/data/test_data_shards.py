"""Shard writer and reader round-trip real Fashion-MNIST images and labels."""
import gzip
import io
import json
import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gka_vision.data.loader import build_val_loader
from gka_vision.data.pipeline import ShardDataset, expand_urls
from gka_vision.data.shards import (
    FASHION_MNIST_CLASSES, fashion_mnist_samples, iter_tar_samples, load_info, read_idx, write_split,
)
from gka_vision.tools import make_shards

from fashion_mnist import REPO, bundled_samples  # tests/fashion_mnist.py

torch.set_num_threads(1)
# the IDX files: $GKA_FASHION_MNIST_DIR, or a shared/ folder beside the checkout; the tests that need them skip
REAL_FMNIST = next((d for d in (os.environ.get(make_shards.FMNIST_DIR_ENV),
                                os.path.join(REPO, "..", "shared", "data", "fashion-mnist"))
                    if d and os.path.isfile(os.path.join(d, "t10k-images-idx3-ubyte.gz"))), None)


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """IDX files (the format Fashion-MNIST ships in) holding 300 real images from the bundled sample."""
    d = tmp_path_factory.mktemp("idx")
    pairs = bundled_samples("test", 300)
    imgs = np.stack([np.array(Image.open(io.BytesIO(b))) for b, _ in pairs])
    labels = np.array([l for _, l in pairs], dtype=np.uint8)
    for split, (img_name, lbl_name) in {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}.items():
        sl = slice(0, 200) if split == "train" else slice(200, 300)
        write_idx(d / (img_name + ".gz"), imgs[sl])
        write_idx(d / (lbl_name + ".gz"), labels[sl])
    return d, imgs, labels


def test_idx_reader_and_png_roundtrip(idx_dir, tmp_path):
    d, imgs, labels = idx_dir
    assert read_idx(d / "train-images-idx3-ubyte.gz").shape == (200, 28, 28)
    rc = make_shards.main(["fashion-mnist", "--src", str(d), "--out", str(tmp_path), "--num-shards", "3"])
    assert rc == 0
    info = load_info(tmp_path)
    assert info["splits"]["train"]["num_samples"] == 200 and info["splits"]["test"]["num_samples"] == 100
    assert sum(info["splits"]["train"]["shard_lengths"]) == 200 and len(info["splits"]["train"]["filenames"]) == 3
    assert json.loads((tmp_path / "class_index.json").read_text())["classes"] == FASHION_MNIST_CLASSES
    # read back through the training pipeline's reader: every image, pixel-exact, with its label
    urls, lengths, num = expand_urls(str(tmp_path), "train")
    ds = ShardDataset(urls, lambda im: torch.from_numpy(np.array(im)), 16, train=False,
                      shard_lengths=lengths, in_chans=1)
    batches = list(ds)
    got = [(x, y) for xb, yb in batches for x, y in zip(xb, yb.tolist())]
    assert len(got) == 200 == num and len(ds) == len(batches) == 13  # one stream: ceil(200 / 16)
    want = {(imgs[i].tobytes(), int(labels[i])) for i in range(200)}
    assert {(x.numpy().astype(np.uint8).tobytes(), y) for x, y in got} == want
    # shuffled across shards: the first shard is not one class, nor the first images in order
    first = list(iter_tar_samples(tmp_path / info["splits"]["train"]["filenames"][0]))
    assert len({int(s["cls"]) for s in first}) > 3


def test_balanced_subset(idx_dir):
    d, _, labels = idx_dir
    per = int(np.bincount(labels[:200], minlength=10).min())
    samples, classes = fashion_mnist_samples(d, "train", per_class=per, seed=1)
    assert len(samples) == 10 * per
    assert np.bincount([s.label for s in samples], minlength=10).tolist() == [per] * 10
    with pytest.raises(ValueError, match="asked for"):
        fashion_mnist_samples(d, "train", per_class=1000)


@pytest.mark.skipif(REAL_FMNIST is None, reason="the Fashion-MNIST IDX files are not on this machine")
def test_real_fashion_mnist_files():
    samples, _ = fashion_mnist_samples(REAL_FMNIST, "test", per_class=3, seed=0)
    imgs = read_idx(os.path.join(REAL_FMNIST, "t10k-images-idx3-ubyte.gz"))
    assert imgs.shape == (10000, 28, 28)
    idx = int(samples[0].key.split("_")[1])
    assert np.array_equal(np.array(Image.open(io.BytesIO(samples[0].image))), imgs[idx])


def test_imagefolder_roundtrip_keeps_bytes(tmp_path):
    """ImageNet layout (one folder per synset): original bytes stored verbatim, labels from folders."""
    pairs = bundled_samples("test", 40)
    src = tmp_path / "train"
    written = {}
    for i, (png, label) in enumerate(pairs):
        synset = f"n{label:08d}"
        (src / synset).mkdir(parents=True, exist_ok=True)
        if i % 2:  # JPEG files must stay JPEG, byte for byte
            buf = io.BytesIO()
            Image.open(io.BytesIO(png)).save(buf, format="JPEG", quality=90)
            data, name = buf.getvalue(), f"img_{i}.JPEG"
        else:
            data, name = png, f"img_{i}.png"
        (src / synset / name).write_bytes(data)
        written[f"{synset}/{name}"] = (data, label)
    out = tmp_path / "wds"
    assert make_shards.main(["imagefolder", "--src", str(src), "--out", str(out), "--split", "train",
                             "--prefix", "imagenet1k", "--samples-per-shard", "16"]) == 0
    info = load_info(out)
    classes = sorted({f"n{l:08d}" for _, l in pairs})
    assert info["classes"] == classes
    entry = info["splits"]["train"]
    assert entry["num_samples"] == 40 and entry["filenames"][0].startswith("imagenet1k-train-")
    seen = {}
    for f in entry["filenames"]:
        for s in iter_tar_samples(out / f):
            meta = json.loads(s["json"])
            img = s.get("png", s.get("jpg"))
            seen[meta["path"]] = (img, classes[int(s["cls"])])
    assert seen.keys() == written.keys()
    for path, (data, label) in written.items():
        assert seen[path][0] == data and seen[path][1] == f"n{label:08d}"
    # the eval loader reads the same shards (and the plain ImageFolder tree) with the same labels
    from gka_vision.engine.config import DataConfig
    dc = DataConfig(root=str(out), img_size=28, in_chans=1, mean=[0.5], std=[0.5], crop_pct=1.0, num_workers=0,
                    batch_size=8)
    for root, split in ((str(out), "train"), (str(src), "")):
        loader, _ = build_val_loader(dc, root, split)
        ys = sorted(y for _, yb in loader for y in yb.tolist())
        assert ys == sorted(classes.index(f"n{l:08d}") for _, l in pairs)


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_shards.main(["imagefolder", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                          "--split", "train"])
    with pytest.raises(FileNotFoundError, match="not found"):
        fashion_mnist_samples(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="_info.json"):
        expand_urls(str(tmp_path), "train")
    with pytest.raises(ValueError, match="no samples"):
        write_split([], tmp_path, "train", ["a"])


def test_imagefolder_matches_extensions_in_any_case_and_warns_about_what_it_drops(tmp_path, capsys):
    """Issue 12, defect 9: `.Png`, `.JpEg`, `.WEBP`, `.Bmp` are images too; non-image files and class
    folders of a val tree that the train tree lacks are dropped with a warning, not silently."""
    pairs = bundled_samples("test", 12)
    train, val = tmp_path / "train", tmp_path / "val"
    fmts = [("png", "PNG"), ("Png", "PNG"), ("JpEg", "JPEG"), ("WEBP", "WEBP"), ("Bmp", "BMP"), ("jpg", "JPEG")]
    for i, (png, _) in enumerate(pairs[:6]):
        ext, fmt = fmts[i]
        (train / f"n{i % 3:08d}").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).save(buf, format=fmt)
        (train / f"n{i % 3:08d}" / f"img{i}.{ext}").write_bytes(buf.getvalue())
    (train / "n00000000" / "notes.txt").write_text("not an image")
    (train / "labels.csv").write_text("a stray file at the root")
    for i, (png, _) in enumerate(pairs[6:12]):
        (val / f"n{i % 4:08d}").mkdir(parents=True, exist_ok=True)  # n00000003 is not a train class
        (val / f"n{i % 4:08d}" / f"v{i}.PNG").write_bytes(png)
    out = tmp_path / "wds"
    assert make_shards.main(["imagefolder", "--src", str(train), "--out", str(out), "--split", "train"]) == 0
    err = capsys.readouterr().err
    assert load_info(out)["splits"]["train"]["num_samples"] == 6  # every case of every extension
    assert "notes.txt" in err and "labels.csv" in err and "are not images" in err
    assert make_shards.main(["imagefolder", "--src", str(val), "--out", str(out), "--split", "val",
                             "--classes-from", str(train)]) == 0
    err = capsys.readouterr().err
    assert "n00000003" in err and "not in the class list" in err
    assert load_info(out)["splits"]["val"]["num_samples"] == 5  # v3 dropped with its class
    # the ImageFolder evaluation reader uses the same extension rule
    from gka_vision.data.pipeline import FolderDataset
    assert len(FolderDataset(str(train), lambda im: im)) == 6
