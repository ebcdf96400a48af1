"""Webdataset input pipeline that is correct under torchrun and keeps a GPU fed.

One batch, from shard to tensor:

    sample ranges of shards (order.py) --> tar members grouped by key (tar_reader.py), encoded bytes
      --> shuffle buffer of encoded samples, drained at the end of every pass (training)
      --> decode (PIL) and label check; bad samples skipped, warned about, counted once (skips.py)
      --> timm transform --> batch of B (inside the worker) --> DataLoader(batch_size=None)

The shuffle buffer holds each sample's bytes as they are on disk (an ImageNet JPEG is ~110 KB; the
same image decoded at 500x375 RGB is 562 KB), and an image is decoded once, after the shuffle, when
it is used.

Training never runs out and never hangs: every (rank, worker) pair reads an endless sequence of
passes over the data set and stops after a fixed number of batches, the same on every rank. With the
shard lengths of ``_info.json`` the passes are cut into batch-sized chunks dealt to the workers of
all ranks in the order the steps consume them (order.py), so an epoch trains on every sample once
before any sample again, whatever the shuffle buffer size; shards drawn with replacement only with
``resample=True``. Everything random depends only on ``(seed, epoch, rank, worker)``, so an epoch can
be replayed exactly after a resume.

Validation reads every shard once: shard ``i`` goes to rank ``i mod world``, and a rank's ``j``-th
shard to its worker ``j mod workers``; no shuffling, the last batch may be short; the loop sums the
metrics over ranks with ``all_reduce``. A shard that yields fewer samples than ``_info.json`` records
(cut or corrupt) is named in a warning and its missing samples are counted as skipped.
"""
from __future__ import annotations

import io
import math
import os
import random
import warnings
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from .order import Segment, chunk_segments, global_worker, mix_seed, shard_segments
from .shards import is_image_file, load_info
from .skips import SkipCounter, first_line
from .tar_reader import IMAGE_KEYS, ShardRead, is_local, iter_shard

__all__ = ["ShardDataset", "FolderDataset", "SkipCounter", "decode_sample", "expand_urls", "dist_info",
           "worker_info", "shuffled_passes"]


# ---------------------------------------------------------------------------- rank and worker

def dist_info() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed if initialised, else from torchrun's env vars."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# ---------------------------------------------------------------------------- decoding

def decode_sample(sample: dict, mode: str, num_classes: Optional[int] = None) -> tuple[Image.Image, int]:
    """PIL image (converted to ``mode``) and class index of one sample; ValueError naming the
    problem for a sample without an image or label, a label that is not an integer in
    ``0 .. num_classes-1``, or an image that does not decode."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise ValueError(f"no image (expected one of {IMAGE_KEYS}, found {list(sample.get('__exts__', ()))})")
    if "cls" not in sample:
        raise ValueError("no .cls label")
    raw = sample["cls"]
    try:
        label = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"the .cls label {raw[:20]!r} is not an integer") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        classes = f"for {num_classes} classes (0..{num_classes - 1})" if num_classes is not None else "(labels are >= 0)"
        raise ValueError(f"label {label} is out of range {classes}")
    img = Image.open(io.BytesIO(sample[key]))
    img.load()  # the full decode, here, so a cut image fails inside the skip handler
    return img.convert(mode), label


def shuffled_passes(items: Iterator[tuple], size: int, rng: random.Random) -> Iterator:
    """Shuffle buffer over ``(pass, item)`` pairs: holds up to ``size`` items and emits a random one per
    new item; at the start of a new pass it first empties itself (shuffled), so no item of pass
    ``p + 1`` comes out before every item of pass ``p``."""
    buf: list = []
    current = None
    for p, item in items:
        if p != current:
            rng.shuffle(buf)
            yield from buf
            buf = []
            current = p
        buf.append(item)
        if len(buf) >= size:
            j = rng.randrange(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


# ---------------------------------------------------------------------------- shard lists

def expand_urls(root: Optional[str], split_or_pattern: str) -> tuple[List[str], Optional[List[int]], Optional[int]]:
    """Resolve a split name (read from ``root/_info.json``) or a brace pattern to shard paths.

    Returns (urls, per-shard sample counts or None, total sample count or None). A pattern may end in
    ``|N`` to give its sample count, as in timm: ``imagenet-train-{0000..1023}.tar|1281167``.
    """
    num = None
    if "|" in split_or_pattern:
        split_or_pattern, n = split_or_pattern.rsplit("|", 1)
        num = int(n)
    if root is not None and not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} does not exist or is not a folder")
    if ".tar" not in split_or_pattern:  # a split name
        if root is None:
            raise ValueError(f"split {split_or_pattern!r} needs a data root holding _info.json")
        info = load_info(root)
        splits = info.get("splits", {})
        if split_or_pattern not in splits:
            raise KeyError(f"split {split_or_pattern!r} not in {root}/_info.json (has {sorted(splits)})")
        entry = splits[split_or_pattern]
        urls = [os.path.join(root, f) for f in entry["filenames"]]
        lengths = entry.get("shard_lengths")
        if lengths is not None and len(lengths) != len(urls):
            raise ValueError(f"{root}/_info.json: split {split_or_pattern!r} lists {len(urls)} shards but "
                             f"{len(lengths)} shard_lengths")
        num = num if num is not None else entry.get("num_samples")
    else:
        urls = list(wds.shardlists.expand_urls(split_or_pattern))
        if root is not None:
            urls = [u if os.path.isabs(u) or "://" in u else os.path.join(root, u) for u in urls]
        lengths = None
    missing = [u for u in urls if is_local(u) and not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards are missing, e.g. {missing[0]!r}")
    if not urls:
        raise ValueError(f"no shards found for {split_or_pattern!r} under {root!r}")
    return urls, lengths, num


# ---------------------------------------------------------------------------- the dataset

class ShardDataset(torch.utils.data.IterableDataset):
    """Batches from webdataset shards (see the module docstring for the order of operations).

    ``shard_lengths`` (from ``_info.json``) give training its exact passes and let both modes notice
    shards that yield fewer samples than were written; ``num_classes`` bounds the labels.
    """

    def __init__(
        self,
        urls: Sequence[str],
        transform: Callable,
        batch_size: int,
        *,
        train: bool,
        num_samples: Optional[int] = None,
        shard_lengths: Optional[Sequence[int]] = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 2000,
        in_chans: int = 3,
        skip_counter: Optional[SkipCounter] = None,
        num_classes: Optional[int] = None,
        resample: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.urls = list(urls)
        if shard_lengths is not None and len(shard_lengths) != len(self.urls):
            raise ValueError(f"{len(self.urls)} shards but {len(shard_lengths)} shard lengths")
        self.transform = transform
        self.batch_size = batch_size
        self.train = train
        self.num_samples = num_samples
        self.shard_lengths = [int(n) for n in shard_lengths] if shard_lengths is not None else None
        self.num_workers = max(1, num_workers)
        self.seed = seed
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.num_classes = num_classes
        self.resample = resample
        self.mode = {1: "L", 3: "RGB"}.get(in_chans)
        if self.mode is None:
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        self.skips = skip_counter or SkipCounter()
        self.epoch = 0
        rank, world = dist_info()
        self.rank, self.world = rank, world
        # chunked passes need every shard's length and cheap seeks into it
        self.chunked = self.shard_lengths is not None and all(is_local(u) for u in self.urls)
        if train:
            if num_samples is None:
                raise ValueError("training shards need a sample count (from _info.json or a 'pattern|N' suffix)")
            if self.shard_lengths is not None and sum(self.shard_lengths) == 0:
                raise ValueError("the training shards hold no samples (all shard lengths are 0)")
            steps = math.ceil(num_samples / (batch_size * world))
            self.batches_per_worker = math.ceil(steps / self.num_workers)

    @property
    def expected_samples(self) -> Optional[int]:
        """Samples the shards hold according to ``_info.json`` (validation: what one pass should see)."""
        return sum(self.shard_lengths) if self.shard_lengths is not None else self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch (validation: exact when shard lengths are known)."""
        if self.train:
            return self.batches_per_worker * self.num_workers
        if self.shard_lengths is None:
            raise TypeError("length unknown: validation shards given without shard lengths")
        mine = self.shard_lengths[self.rank::self.world]
        return sum(math.ceil(sum(mine[w::self.num_workers]) / self.batch_size) for w in range(self.num_workers))

    def __iter__(self):
        worker, nworkers = worker_info()
        if nworkers != self.num_workers:
            raise RuntimeError(f"dataset built for {self.num_workers} workers, DataLoader runs {nworkers}")
        gid, gnum = global_worker(self.rank, self.world, worker), self.world * nworkers
        if torch.utils.data.get_worker_info() is not None:
            # augmentations draw from these; tie them to (seed, epoch, rank, worker)
            s = mix_seed(self.seed, self.epoch, gid, 0xA06)
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
        self._failures = 0  # consecutive bad or missing samples (and empty shard reads)
        if self.train:
            if self.chunked:
                segs = chunk_segments(self.shard_lengths, self.seed, self.epoch, gid, gnum, self.batch_size,
                                      self.resample)
            else:
                segs = shard_segments(len(self.urls), self.seed, self.epoch, gid, gnum, self.resample)
            encoded = self._read(segs, guard=self._failure_limit(gnum))
            stream = shuffled_passes(encoded, self.shuffle_buffer,
                                     random.Random(mix_seed(self.seed, self.epoch, gid, 0x5B)))
        else:
            # shard i -> rank i mod world, then this rank's j-th shard -> worker j mod nworkers
            mine = list(range(len(self.urls)))[self.rank::self.world][worker::nworkers]
            stream = (s for _, s in self._read((Segment(0, i, 0, None) for i in mine), guard=None))
        batch_imgs, batch_labels, n_batches = [], [], 0
        for img, label in self._decoded(stream):
            batch_imgs.append(self.transform(img))
            batch_labels.append(label)
            if len(batch_imgs) == self.batch_size:
                yield torch.stack(batch_imgs), torch.tensor(batch_labels, dtype=torch.long)
                batch_imgs, batch_labels = [], []
                n_batches += 1
                if self.train and n_batches == self.batches_per_worker:
                    return
        if batch_imgs and not self.train:
            yield torch.stack(batch_imgs), torch.tensor(batch_labels, dtype=torch.long)

    def _failure_limit(self, gnum: int) -> int:
        per_pass = math.ceil((self.expected_samples or len(self.urls)) / gnum)
        return 2 * (per_pass + len(self.urls) + self.batch_size)

    def _fail(self, n: int, guard: Optional[int]) -> None:
        self._failures += n
        if guard is not None and self._failures > guard:
            raise RuntimeError(f"no readable sample in {self._failures} consecutive samples and shard reads "
                               f"({self.skips.count} distinct samples skipped); are the shards all corrupt?")

    def _read(self, segments: Iterator[Segment], guard: Optional[int]) -> Iterator[tuple]:
        """``(pass, encoded sample)`` for every sample of ``segments``; shards that end early are
        reported and their missing samples counted."""
        for seg in segments:
            url = self.urls[seg.shard]
            read = ShardRead(url)
            for s in iter_shard(url, seg.start, seg.stop, read):
                yield seg.pass_index, s
            recorded = self.shard_lengths[seg.shard] if self.shard_lengths is not None else None
            want_end = seg.stop if seg.stop is not None else recorded
            end = seg.start + read.samples
            if want_end is not None and end < want_end:
                reason = read.error or "the shard ends early"
                new = sum(self.skips.skip(url, f"#{i}", reason, warn=False) for i in range(end, want_end))
                if new:
                    warnings.warn(f"shard {url} ends after {end} of the {recorded} samples recorded in _info.json "
                                  f"({reason}); samples {end}..{want_end - 1} are skipped", RuntimeWarning)
                self._fail(want_end - end, guard)
            elif read.error is not None and (recorded is None or end < recorded):
                if self.skips.skip(url, "@end", read.error, warn=False):
                    warnings.warn(f"shard {url}: {read.error}; {read.samples} samples read from it, the rest is "
                                  "skipped (counted as one sample: _info.json records no shard lengths)",
                                  RuntimeWarning)
                self._fail(1, guard)
            elif seg.stop is None and recorded is not None and end > recorded:
                warnings.warn(f"shard {url} holds more samples ({end}) than _info.json records ({recorded})",
                              RuntimeWarning)
            if read.samples == 0:
                self._fail(1, guard)  # an empty shard read must not spin forever either

    def _decoded(self, samples: Iterator[dict]) -> Iterator[tuple]:
        guard = self._failure_limit(self.world * self.num_workers) if self.train else None
        for s in samples:
            try:
                out = decode_sample(s, self.mode, self.num_classes)
            except Exception as exn:  # noqa: BLE001 - any decode failure is a bad sample
                self.skips.skip(s["__url__"], s["__key__"], first_line(exn))
                self._fail(1, guard)
                continue
            self._failures = 0
            yield out


# ---------------------------------------------------------------------------- ImageFolder (eval)

class FolderDataset(torch.utils.data.Dataset):
    """An ImageFolder tree (``root/<class>/<image>``) for evaluation; this rank's slice only."""

    def __init__(self, root: str, transform: Callable, in_chans: int = 3, classes: Optional[Sequence[str]] = None):
        from .shards import find_classes
        self.classes = list(classes) if classes is not None else find_classes(root)
        self.items = []
        for idx, c in enumerate(self.classes):
            folder = Path(root) / c
            if folder.is_dir():
                self.items += [(p, idx) for p in sorted(folder.rglob("*")) if is_image_file(p)]
        if not self.items:
            raise ValueError(f"no images found under ImageFolder root {root!r}")
        rank, world = dist_info()
        self.items = self.items[rank::world]
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert(self.mode)), label
