"""Real Fashion-MNIST images from the package's bundled sample, small shard folders made of them, and the
bundled training config made tiny: what the data, engine, model and benchmark tests share."""
import os
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


def tiny_cfg(data_root, out, *extra):
    """The bundled config on ``data_root`` with TINY_MODEL, batches of 20, two epochs, no workers, quiet;
    ``extra`` overrides come last."""
    return load_config(str(BUNDLED_CONFIG),
                       [f"data.root={data_root}", f"output={out}", "data.batch_size=20", "data.val_batch_size=50",
                        "data.num_workers=0", "data.shuffle_buffer=50", "sched.epochs=2", "sched.warmup_epochs=0.5",
                        "progress=false", "threads=1", *TINY_MODEL, *extra])
