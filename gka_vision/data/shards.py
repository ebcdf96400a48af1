"""Writing webdataset shards from an ImageFolder tree or from Fashion-MNIST's IDX files.

A shard is a plain tar file; each sample is a group of members sharing a key:
``<key>.png`` or ``<key>.jpg`` (the original image bytes, never re-encoded), ``<key>.cls``
(the class index as ASCII) and, for ImageFolder sources, ``<key>.json`` (the source path).

Samples are shuffled across shards before writing, so a small shuffle buffer at training time
still mixes classes. Next to the shards the writer puts:

* ``_info.json``: split sizes, shard file names and per-shard sample counts, in the layout timm's
  ``create_dataset('wds/...')`` reader also understands (``{"splits": {name: {...}}}``),
  plus the class names;
* ``class_index.json``: ``{"classes": [...], "class_to_idx": {...}}``.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import random
import struct
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # matched in any case (".JPEG", ".Png")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Sample:
    key: str
    image: bytes  # encoded image file bytes
    ext: str  # "png", "jpg", ...
    label: int
    meta: Optional[dict] = None


# ---------------------------------------------------------------------------- tar writing

def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, samples: Sequence[Sample]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    gz = path.name.endswith(".gz")  # tar headers and padding compress ~5x; webdataset reads .tar.gz as is
    opener = (lambda: tarfile.open(tmp, "w:gz", format=tarfile.USTAR_FORMAT, compresslevel=9)) if gz else \
        (lambda: tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT))
    with opener() as tar:
        for s in samples:
            _add_member(tar, f"{s.key}.{s.ext}", s.image)
            _add_member(tar, f"{s.key}.cls", str(int(s.label)).encode("ascii"))
            if s.meta is not None:
                _add_member(tar, f"{s.key}.json", json.dumps(s.meta).encode("utf-8"))
    os.replace(tmp, path)


def write_split(
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    split: str,
    classes: Sequence[str],
    *,
    samples_per_shard: int = 1000,
    num_shards: Optional[int] = None,
    prefix: Optional[str] = None,
    seed: int = 0,
    compress: bool = False,
) -> dict:
    """Shuffle ``samples`` and write them as ``<prefix>-<split>-NNNNNN.tar`` shards in ``out_dir``.

    ``num_shards`` (if given) wins over ``samples_per_shard``; ``compress`` writes ``.tar.gz``. Updates ``_info.json`` and writes
    ``class_index.json``; returns this split's info entry.
    """
    if len(samples) == 0:
        raise ValueError(f"split {split!r} has no samples to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)  # shuffle across shards: shards are not class-sorted
    if num_shards is None:
        num_shards = max(1, -(-len(samples) // samples_per_shard))
    num_shards = min(num_shards, len(samples))
    bounds = np.linspace(0, len(samples), num_shards + 1).round().astype(int)
    stem = f"{prefix}-{split}" if prefix else split
    filenames, lengths = [], []
    for i in range(num_shards):
        chunk = [samples[j] for j in order[bounds[i]:bounds[i + 1]]]
        name = f"{stem}-{i:06d}.tar" + (".gz" if compress else "")
        _write_shard(out / name, chunk)
        filenames.append(name)
        lengths.append(len(chunk))
    entry = {
        "name": split,
        "num_samples": int(len(samples)),
        "filenames": filenames,
        "shard_lengths": lengths,
    }
    _update_info(out, split, entry, classes)
    return entry


def _update_info(out: Path, split: str, entry: dict, classes: Sequence[str]) -> None:
    info_path = out / "_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    old = info.get("classes")
    if old is not None and list(old) != list(classes):
        raise ValueError(f"{info_path} lists other classes than this split {split!r}; "
                         "write each data set into its own folder")
    info["classes"] = list(classes)
    info["num_classes"] = len(classes)
    info.setdefault("splits", {})[split] = entry
    _atomic_write_text(info_path, json.dumps(info, indent=1))
    class_index = {"classes": list(classes), "class_to_idx": {c: i for i, c in enumerate(classes)}}
    _atomic_write_text(out / "class_index.json", json.dumps(class_index, indent=1))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- ImageFolder

def find_classes(root: str | os.PathLike) -> List[str]:
    """Class names of an ImageFolder tree: its sub-folders, sorted (ImageNet: the synset ids)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root {str(root)!r} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"ImageFolder root {str(root)!r} has no class sub-folders")
    return classes


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS and path.is_file()


def imagefolder_samples(root: str | os.PathLike, classes: Optional[Sequence[str]] = None) -> Tuple[List[Sample], List[str]]:
    """Samples of an ImageFolder tree (``root/<class>/<image>``), image bytes read verbatim.

    Warns (RuntimeWarning) about what is left out: files that are not images, files outside the
    class folders, and class folders that are not in ``classes`` (a val tree with a class the train
    tree lacks).
    """
    root = Path(root)
    classes = list(classes) if classes is not None else find_classes(root)
    samples, dropped = [], []
    for idx, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue  # a val split may lack some classes
        for p in sorted(folder.rglob("*")):
            if not is_image_file(p):
                if p.is_file():
                    dropped.append(p)
                continue
            ext = p.suffix.lower().lstrip(".")
            ext = "jpg" if ext == "jpeg" else ext
            rel = p.relative_to(root).as_posix()
            key = f"{idx:05d}_{len(samples):08d}"
            samples.append(Sample(key, p.read_bytes(), ext, idx, {"path": rel}))
    if not samples:
        raise ValueError(f"no images with extensions {' '.join(IMG_EXTENSIONS)} (any case) found under {str(root)!r}")
    if dropped:
        kinds = Counter(p.suffix.lower() or "(no extension)" for p in dropped)
        warnings.warn(f"{len(dropped)} files under {str(root)!r} are not images ({' '.join(IMG_EXTENSIONS)} in any case) and "
                      f"are left out: {', '.join(f'{k} x{n}' for k, n in kinds.most_common())}; e.g. "
                      + ", ".join(p.relative_to(root).as_posix() for p in dropped[:5]), RuntimeWarning, stacklevel=2)
    stray = sorted(p.name for p in root.iterdir() if p.is_file())
    if stray:
        warnings.warn(f"{len(stray)} files at the top of {str(root)!r} are in no class folder and are left out: "
                      + ", ".join(stray[:5]), RuntimeWarning, stacklevel=2)
    known = set(classes)
    extra = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in known)
    if extra:
        n_img = sum(1 for c in extra for p in (root / c).rglob("*") if is_image_file(p))
        warnings.warn(f"{len(extra)} class folders under {str(root)!r} are not in the class list and are left out "
                      f"({n_img} images): {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""),
                      RuntimeWarning, stacklevel=2)
    return samples, classes


# ---------------------------------------------------------------------------- Fashion-MNIST IDX

def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def find_idx(root: Path, stem: str) -> Path:
    for cand in (root / (stem + ".gz"), root / stem):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {str(root)!r}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format: big-endian magic, dims, then uint8 data)."""
    path = Path(path)
    with _open_maybe_gz(path) as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path} is too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {data.size}")
    return data.reshape(dims)


def encode_png(array: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def fashion_mnist_samples(
    root: str | os.PathLike,
    split: str,
    *,
    per_class: Optional[int] = None,
    seed: int = 0,
) -> Tuple[List[Sample], List[str]]:
    """Samples of the Fashion-MNIST ``split`` ("train" or "test") as PNG bytes.

    ``per_class`` takes a class-balanced random subset of that many images per class.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {list(FASHION_MNIST_FILES)}, got {split!r}")
    root = Path(root)
    img_stem, lbl_stem = FASHION_MNIST_FILES[split]
    images = read_idx(find_idx(root, img_stem))
    labels = read_idx(find_idx(root, lbl_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    index = np.arange(len(labels))
    if per_class is not None:
        rng = np.random.default_rng(seed)
        picked = []
        for c in range(len(FASHION_MNIST_CLASSES)):
            members = index[labels == c]
            if len(members) < per_class:
                raise ValueError(f"class {c} has only {len(members)} images in {split}, asked for {per_class}")
            picked.append(np.sort(rng.choice(members, per_class, replace=False)))
        index = np.sort(np.concatenate(picked))
    samples = [
        Sample(f"{split}_{int(i):06d}", encode_png(images[i]), "png", int(labels[i]))
        for i in index
    ]
    return samples, list(FASHION_MNIST_CLASSES)


def load_info(root: str | os.PathLike) -> dict:
    """Read ``_info.json`` of a shard folder, with a clear error when it is missing."""
    path = Path(root) / "_info.json"
    if not path.exists():
        raise FileNotFoundError(f"no _info.json in shard folder {str(root)!r} (make one with "
                                "`python -m gka_vision.tools.make_shards`)")
    return json.loads(path.read_text())


def iter_tar_samples(path: str | os.PathLike) -> Iterable[dict]:
    """Group a shard's members by key (a small reader used by tests and tools)."""
    current, key = {}, None
    with tarfile.open(path, "r") as tar:
        for m in tar:
            if not m.isreg():
                continue
            k, _, ext = m.name.partition(".")
            if key is not None and k != key:
                yield current
                current = {}
            key = k
            current["__key__"] = k
            current[ext] = tar.extractfile(m).read()
    if current:
        yield current
