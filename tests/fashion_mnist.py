"""Real Fashion-MNIST images from the package's bundled sample, small shard folders made of them, and the
bundled training config made tiny: what the data, engine, model and benchmark tests share."""
import io
import os
import tarfile
from pathlib import Path

from gka_vision.data.shards import FASHION_MNIST_CLASSES, Sample, _update_info, _write_shard, iter_tar_samples, load_info
from gka_vision.engine.config import BUNDLED_ROOT, load_config

REPO = Path(__file__).resolve().parent.parent
BUNDLED_CONFIG = REPO / "configs" / "fashion_mnist" / "bundled.yaml"
# a one-block GKA model at Fashion-MNIST's 28 x 28: a CPU epoch of 200 images takes about a second
TINY_MODEL = ["model.kwargs={img_size: 28, patch_size: 7, embed_dim: 32, depth: 1, num_heads: 2, "
              "num_iter: 3, backend: torch}"]


def bundled_samples(split="test", n=None):
    """Real Fashion-MNIST (PNG bytes, label) pairs from the bundled shards."""
    info = load_info(BUNDLED_ROOT)
    out = []
    for f in info["splits"][split]["filenames"]:
        for s in iter_tar_samples(os.path.join(BUNDLED_ROOT, f)):
            out.append((s["png"], int(s["cls"])))
            if n is not None and len(out) >= n:
                return out
    return out


def write_shard_folder(root, splits):
    """A shard folder at ``root`` holding the first bundled images of each split: ``splits`` maps a split
    name (train or test) to the lengths of its shards, e.g. ``{"train": [60, 40], "test": [100]}``; its
    ``_info.json`` records them with the ten Fashion-MNIST classes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, lengths in splits.items():
        samples = [Sample(f"{split}{i:04d}", b, "png", y)
                   for i, (b, y) in enumerate(bundled_samples(split, sum(lengths)))]
        names, start = [], 0
        for k, n in enumerate(lengths):
            names.append(f"{split}-{k:06d}.tar")
            _write_shard(root / names[-1], samples[start:start + n])
            start += n
        _update_info(root, split, {"name": split, "num_samples": sum(lengths), "filenames": names,
                                   "shard_lengths": list(lengths)}, FASHION_MNIST_CLASSES)
    return root


def write_id_shards(folder, prefix, lengths):
    """Real images in uneven shards ``<prefix>-NNNNNN.tar`` of ``lengths`` samples, no ``_info.json``; the
    label slot holds each sample's id (0, 1, ...), so a test sees which samples an epoch read. Returns the
    shard paths."""
    samples = [Sample(f"s{i:03d}", png, "png", i) for i, (png, _) in enumerate(bundled_samples("train", sum(lengths)))]
    paths, start = [], 0
    for k, n in enumerate(lengths):
        paths.append(str(Path(folder) / f"{prefix}-{k:06d}.tar"))
        _write_shard(Path(paths[-1]), samples[start:start + n])
        start += n
    return paths


def add_member(tar, name, data):
    """One raw member in an open tar file: how the tests write samples the shard writer never would."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard_with_bad_samples(path, pairs, n_good, extra=()):
    """A shard of ``n_good`` good samples of ``pairs`` (good0, good1, ...), then four bad ones: undecodable
    bytes (garbage), an image cut in half (truncated, from ``pairs[n_good]``), an image without a label
    (nolabel) and a label that is no integer (badlabel), then the raw members ``extra`` ((name, bytes))."""
    with tarfile.open(path, "w") as tar:
        for i, (png, y) in enumerate(pairs[:n_good]):
            add_member(tar, f"good{i}.png", png)
            add_member(tar, f"good{i}.cls", str(y).encode())
        cut = pairs[n_good][0]
        for name, data in [("garbage.png", b"this is not a png at all"), ("garbage.cls", b"1"),
                           ("truncated.png", cut[: len(cut) // 2]), ("truncated.cls", b"2"),
                           ("nolabel.png", pairs[n_good + 1][0]),
                           ("badlabel.png", pairs[n_good + 2][0]), ("badlabel.cls", b"seven"), *extra]:
            add_member(tar, name, data)


def tiny_cfg(data_root, out, *extra):
    """The bundled config on ``data_root`` with TINY_MODEL, batches of 20, two epochs, no workers, quiet;
    ``extra`` overrides come last."""
    return load_config(str(BUNDLED_CONFIG),
                       [f"data.root={data_root}", f"output={out}", "data.batch_size=20", "data.val_batch_size=50",
                        "data.num_workers=0", "data.shuffle_buffer=50", "sched.epochs=2", "sched.warmup_epochs=0.5",
                        "progress=false", "threads=1", *TINY_MODEL, *extra])
