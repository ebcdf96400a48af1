"""Counting skipped samples: each bad sample once, however often it is read.

A corrupt image, a bad label or a sample missing from a truncated shard is read again in every
epoch (and, in a small data set, in every pass of an epoch). ``SkipCounter`` therefore remembers the
identity of every bad sample, ``(shard url, sample key)``, as a 64-bit hash in a shared array, so the
DataLoader workers of one process count into one set and ``count`` is the number of distinct bad
samples. ``distinct_skips`` merges the sets of all ranks (a sample may be read by another rank in
another epoch).
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import warnings
from typing import Iterable

import numpy as np
import torch


def sample_id(url: str, key: str) -> int:
    """A signed 64-bit hash of a sample's identity (fits an ``int64`` array)."""
    h = hashlib.blake2b(f"{url}\0{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "little", signed=True)


class SkipCounter:
    """Warns about, and counts, distinct skipped samples; shared with DataLoader workers.

    ``capacity`` bounds the remembered identities; past it, further skips are counted without the
    duplicate check (and a warning says so).
    """

    def __init__(self, max_warnings: int = 20, capacity: int = 1 << 16):
        ctx = mp.get_context("spawn")
        self._ids = ctx.Array("q", capacity, lock=False)  # guarded by _n's lock
        self._n = ctx.Value("l", 0)  # distinct ids stored
        self._overflow = ctx.Value("l", 0, lock=False)  # skips past capacity
        self.capacity = capacity
        self.max_warnings = max_warnings

    @property
    def count(self) -> int:
        """Distinct samples skipped so far by this process and its workers."""
        return int(self._n.value) + int(self._overflow.value)

    def ids(self) -> np.ndarray:
        with self._n.get_lock():
            return np.frombuffer(self._ids, dtype=np.int64)[: self._n.value].copy()

    def skip(self, url: str, key: str, reason: str, warn: bool = True) -> bool:
        """Record that sample ``key`` of shard ``url`` is skipped; returns True when it is new. The
        first ``max_warnings`` new ones are also warned about (unless ``warn`` is false)."""
        sid = sample_id(url, key)
        with self._n.get_lock():
            n = self._n.value
            if n and (np.frombuffer(self._ids, dtype=np.int64)[:n] == sid).any():
                return False
            if n < self.capacity:
                self._ids[n] = sid
                self._n.value = n + 1
            else:
                self._overflow.value += 1
            total = self._n.value + self._overflow.value
        if warn and total <= self.max_warnings:
            warnings.warn(f"skipping a corrupt or unreadable sample {key!r} of {url}: {reason}; "
                          f"{total} distinct samples skipped so far", RuntimeWarning, stacklevel=2)
        if total == self.capacity + 1:
            warnings.warn(f"more than {self.capacity} distinct samples skipped: further skips are counted "
                          "without checking for repeats", RuntimeWarning, stacklevel=2)
        return True


def distinct_skips(counters: Iterable[SkipCounter]) -> int:
    """Distinct skipped samples over ``counters`` and over all ranks (a collective when distributed:
    every rank must call it at the same point)."""
    counters = list(counters)
    local = np.unique(np.concatenate([c.ids() for c in counters] or [np.zeros(0, np.int64)]))
    overflow = sum(int(c._overflow.value) for c in counters)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return int(local.size) + overflow
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (local.tolist(), overflow))
    ids = set()
    for lst, _ in gathered:
        ids.update(lst)
    return len(ids) + sum(o for _, o in gathered)


def first_line(exn: BaseException, limit: int = 300) -> str:
    text = f"{type(exn).__name__}: {exn}".splitlines()[0] if str(exn) else type(exn).__name__
    return text if len(text) <= limit else text[:limit] + "..."

