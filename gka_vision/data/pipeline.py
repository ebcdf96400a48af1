"""Webdataset input pipeline that is correct under torchrun.

One batch, from shard to tensor:

    shard urls --(split over rank x worker)--> tar members --(group by key)--> sample dict
      --> decode (PIL, skip and count corrupt samples) --> shuffle buffer (train) --> timm transform
      --> batch of B (inside the worker) --> DataLoader(batch_size=None)

Training never runs out and never hangs: every (rank, worker) pair reads an endless stream of shard
picks and stops after a fixed number of batches, the same on every rank. The stream is built from
per-epoch permutations of all shards; global worker ``g`` of ``G`` takes picks ``g, g+G, g+2G, ...``,
so within each permutation the ranks and workers read disjoint shards (each rank sees different
data) even when there are fewer shards than ``G``. Everything random depends only on
``(seed, epoch, rank, worker)``, so an epoch can be replayed exactly after a resume.

Validation reads every shard once: shard ``i`` goes to rank ``i mod world``, and a rank's ``j``-th
shard to its worker ``j mod workers``; no shuffling,
the last batch may be short; the loop sums the metrics over ranks with ``all_reduce``.
"""
from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import random
import warnings
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from .shards import IMG_EXTENSIONS, load_info

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp")


# ---------------------------------------------------------------------------- rank and worker

def dist_info() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed if initialised, else from torchrun's env vars."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


# ---------------------------------------------------------------------------- corrupt samples

class SkipCounter:
    """Exception handler that warns, counts and skips; the count is shared with DataLoader workers."""

    def __init__(self, max_warnings: int = 20):
        self._count = mp.get_context("spawn").Value("l", 0)
        self.max_warnings = max_warnings

    @property
    def count(self) -> int:
        return int(self._count.value)

    def __call__(self, exn: BaseException) -> bool:
        with self._count.get_lock():
            self._count.value += 1
            n = self._count.value
        if n <= self.max_warnings:
            warnings.warn(f"skipping a corrupt or unreadable sample ({type(exn).__name__}: {exn}); "
                          f"{n} skipped so far", RuntimeWarning, stacklevel=2)
        return True  # keep going


def decode_sample(sample: dict, mode: str) -> tuple[Image.Image, int]:
    """PIL image (converted to ``mode``) and class index of one webdataset sample."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} has no image "
                         f"(expected one of {IMAGE_KEYS}, found {sorted(k for k in sample if not k.startswith('__'))})")
    if "cls" not in sample:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} has no .cls label")
    img = Image.open(io.BytesIO(sample[key]))
    img.load()  # force the full decode here, so truncated files fail inside the handler
    label = int(sample["cls"].decode("ascii").strip())
    return img.convert(mode), label


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
        num = num if num is not None else entry.get("num_samples")
    else:
        urls = list(wds.shardlists.expand_urls(split_or_pattern))
        if root is not None:
            urls = [u if os.path.isabs(u) or "://" in u else os.path.join(root, u) for u in urls]
        lengths = None
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards are missing, e.g. {missing[0]!r}")
    if not urls:
        raise ValueError(f"no shards found for {split_or_pattern!r} under {root!r}")
    return urls, lengths, num


def train_shard_picks(urls: Sequence[str], seed: int, epoch: int, gid: int, gnum: int) -> Iterator[dict]:
    """Endless picks for global worker ``gid`` of ``gnum``: every ``gnum``-th shard of a stream of
    per-epoch permutations. Never empty, disjoint across workers within each permutation."""
    rng = random.Random(_mix_seed(seed, epoch, 0x5A4D))
    pos = 0
    while True:
        perm = list(urls)
        rng.shuffle(perm)
        for u in perm:
            if pos % gnum == gid:
                yield {"url": u}
            pos += 1


# ---------------------------------------------------------------------------- the dataset

class ShardDataset(torch.utils.data.IterableDataset):
    """Batches from webdataset shards (see the module docstring for the order of operations)."""

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
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.urls = list(urls)
        self.transform = transform
        self.batch_size = batch_size
        self.train = train
        self.num_samples = num_samples
        self.shard_lengths = list(shard_lengths) if shard_lengths is not None else None
        self.num_workers = max(1, num_workers)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.mode = {1: "L", 3: "RGB"}.get(in_chans)
        if self.mode is None:
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        self.skips = skip_counter or SkipCounter()
        self.epoch = 0
        rank, world = dist_info()
        self.rank, self.world = rank, world
        if train:
            if num_samples is None:
                raise ValueError("training shards need a sample count (from _info.json or a 'pattern|N' suffix)")
            steps = math.ceil(num_samples / (batch_size * world))
            self.batches_per_worker = math.ceil(steps / self.num_workers)

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
        gid, gnum = self.rank * nworkers + worker, self.world * nworkers
        if self.train:
            picks = train_shard_picks(self.urls, self.seed, self.epoch, gid, gnum)
        else:
            # shard i -> rank i mod world, then this rank's j-th shard -> worker j mod nworkers
            mine = self.urls[self.rank::self.world]
            picks = ({"url": u} for j, u in enumerate(mine) if j % nworkers == worker)
        if torch.utils.data.get_worker_info() is not None:
            # augmentations draw from these; tie them to (seed, epoch, rank, worker)
            s = _mix_seed(self.seed, self.epoch, gid, 0xA06)
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
        picks = self._guard_unreadable(picks, gnum)
        stream = wds.tarfile_to_samples(handler=self.skips)(picks)
        stream = self._decoded(stream)
        if self.train:
            stream = self._shuffled(stream, random.Random(_mix_seed(self.seed, self.epoch, gid, 0x5B)))
        batch_imgs, batch_labels, n_batches = [], [], 0
        for img, label in stream:
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

    def _guard_unreadable(self, picks: Iterator[dict], gnum: int) -> Iterator[dict]:
        """Fail loudly instead of spinning forever when whole rounds of shards yield nothing."""
        self._since_good = 0
        for p in picks:
            self._since_good += 1
            if self.train and self._since_good > 2 * max(len(self.urls), gnum):
                raise RuntimeError(f"no readable sample in {self._since_good} consecutive shard reads "
                                   f"({self.skips.count} samples skipped); are the shards all corrupt?")
            yield p

    def _decoded(self, samples: Iterator[dict]) -> Iterator[tuple]:
        for s in samples:
            try:
                out = decode_sample(s, self.mode)
            except Exception as exn:  # noqa: BLE001 - any decode failure is a corrupt sample
                self.skips(exn)
                continue
            self._since_good = 0
            yield out

    def _shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        """Shuffle buffer: keep ``shuffle_buffer`` items, emit a random one per new item."""
        buf = []
        for it in items:
            buf.append(it)
            if len(buf) >= self.shuffle_buffer:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


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
                self.items += [(p, idx) for p in sorted(folder.rglob("*")) if p.suffix in IMG_EXTENSIONS]
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
