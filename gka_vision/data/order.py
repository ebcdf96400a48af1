"""The order of a training epoch: which samples each DataLoader worker reads, and when.

An epoch is an endless sequence of *passes*; pass ``p`` visits every shard once, in the order of a
permutation drawn from ``(seed, epoch, p)`` (with ``resample``: shards drawn with replacement).

With the shard lengths (``_info.json``) the passes are laid end to end as one sequence of samples,
cut into chunks of ``batch`` samples. Chunk ``j`` is step ``j // R`` of rank ``j % R`` (R ranks),
and that step's batch comes from DataLoader worker ``(j // R) % W`` (W workers per rank), because a
DataLoader takes its workers' batches in turn. So *global worker* ``g = worker * R + rank`` reads the
chunks ``g, g + G, g + 2G, ...`` (``G = R * W``): the steps of all ranks together consume the
sequence in order, and each worker drains its shuffle buffer at the end of a pass, so no sample is
trained on twice before every sample of the data set was seen once (at batch granularity; a skipped
bad sample shifts its worker's batches by one), whatever the buffer size. A chunk is read as one or more *segments*, sample ranges of a shard.

Without shard lengths (a ``pattern|N`` split) the unit is a whole shard: shard ``j`` of the pass
sequence goes to global worker ``j mod G``; each worker still sees its own shards of a pass once
before any of them again.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np


def mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


@dataclass(frozen=True)
class Segment:
    pass_index: int  # which pass of the epoch this sample range belongs to
    shard: int  # index into the shard list
    start: int  # first sample (position in the shard)
    stop: Optional[int]  # one past the last; None = to the end of the shard (length unknown)


def pass_order(num_shards: int, seed: int, epoch: int, pass_index: int, resample: bool = False) -> List[int]:
    """The shard order of one pass: a permutation, or ``num_shards`` draws with replacement."""
    rng = random.Random(mix_seed(seed, epoch, pass_index, 0x5A4D))
    if resample:
        return [rng.randrange(num_shards) for _ in range(num_shards)]
    order = list(range(num_shards))
    rng.shuffle(order)
    return order


def global_worker(rank: int, world: int, worker: int) -> int:
    """The position of (rank, worker) in the order in which the steps of all ranks consume batches."""
    return worker * world + rank


def chunk_segments(lengths: Sequence[int], seed: int, epoch: int, gid: int, gnum: int, batch: int,
                   resample: bool = False) -> Iterator[Segment]:
    """Endless segments of global worker ``gid``'s chunks (known shard lengths)."""
    lengths = [int(n) for n in lengths]
    if sum(lengths) <= 0:
        raise ValueError("the shards hold no samples (all shard lengths are 0)")
    p, p_start = 0, 0  # current pass and the position of its first sample in the sequence
    order, cum = _pass_layout(lengths, seed, epoch, 0, resample)
    j = gid
    while True:
        lo, hi = j * batch, (j + 1) * batch  # the chunk's samples in the sequence of passes
        pos = lo
        while pos < hi:
            while pos >= p_start + cum[-1]:  # move on to the pass holding ``pos``
                p_start += cum[-1]
                p += 1
                order, cum = _pass_layout(lengths, seed, epoch, p, resample)
            off = pos - p_start
            k = bisect.bisect_right(cum, off) - 1  # the pass's k-th shard holds ``off``
            s0 = off - cum[k]
            take = min(hi - pos, lengths[order[k]] - s0)
            yield Segment(p, order[k], s0, s0 + take)
            pos += take
        j += gnum


def _pass_layout(lengths, seed, epoch, p, resample):
    """The shards of pass ``p`` in order (empty ones left out) and the pass's cumulative lengths."""
    nonempty = [s for s, n in enumerate(lengths) if n > 0]
    order = [nonempty[i] for i in pass_order(len(nonempty), seed, epoch, p, resample)]
    cum = [0]
    for s in order:
        cum.append(cum[-1] + lengths[s])
    return order, cum


def shard_segments(num_shards: int, seed: int, epoch: int, gid: int, gnum: int,
                   resample: bool = False) -> Iterator[Segment]:
    """Endless whole-shard segments of global worker ``gid`` (shard lengths unknown)."""
    p, order, base = 0, pass_order(num_shards, seed, epoch, 0, resample), 0
    j = gid
    while True:
        while j >= base + num_shards:
            base += num_shards
            p += 1
            order = pass_order(num_shards, seed, epoch, p, resample)
        yield Segment(p, order[j - base], 0, None)
        j += gnum
