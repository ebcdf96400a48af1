"""Reading samples out of one webdataset shard: tar members grouped by key, a range of samples, and
a shard that ends too early (cut inside a member header or inside its data) reported, not hidden.

Python's ``tarfile`` stops without an error at a broken header after the first member, so a cut
shard would just look shorter. ``iter_shard`` therefore checks, when the member list ends, that the
archive ends with its zero block; when it does not (or a member's data is cut) it records the reason
in ``ShardRead.error``. The caller compares ``ShardRead.samples`` with the shard length written by
make_shards.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Iterator, Optional

from .skips import first_line

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp")
KEEP_KEYS = IMAGE_KEYS + ("cls",)  # what a sample holds while it waits in the shuffle buffer


@dataclass
class ShardRead:
    """What reading one shard (or a range of it) gave."""
    url: str
    samples: int = 0  # complete samples yielded
    error: Optional[str] = None  # why the shard ended early, when it did


def split_name(name: str) -> tuple[str, str]:
    """webdataset's member naming: ``dir/key.ext.ext2`` -> (``dir/key``, ``ext.ext2``)."""
    head, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), (ext.lower() if dot else "")


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def _open(url: str) -> tarfile.TarFile:
    if is_local(url):
        return tarfile.open(url, "r:*")  # random access: skipping a member seeks past its data
    import webdataset as wds
    return tarfile.open(fileobj=wds.gopen(url), mode="r|*")


def iter_shard(url: str, start: int = 0, stop: Optional[int] = None, read: Optional[ShardRead] = None,
               keep=KEEP_KEYS) -> Iterator[dict]:
    """Samples ``start .. stop-1`` (by position in the shard; ``stop=None``: to the end) of shard ``url``.

    Each sample is a dict with ``__key__``, ``__url__``, ``__index__`` (position in the shard),
    ``__exts__`` (all its member extensions) and the bytes of its members whose extension is in
    ``keep``. A sample whose members are cut off is not yielded; ``read`` (a ShardRead) receives the
    count and the reason reading stopped early.
    """
    read = read if read is not None else ShardRead(url)
    try:
        tar = _open(url)
    except Exception as exn:  # noqa: BLE001 - an unreadable shard is reported, not raised
        read.error = f"cannot open the shard ({first_line(exn)})"
        return
    with tar:
        index, key, cur = -1, None, None
        try:
            for m in tar:
                if not m.isreg():
                    continue
                k, ext = split_name(m.name)
                if k != key:
                    if cur is not None:
                        read.samples += 1
                        yield cur
                    index, key, cur = index + 1, k, None
                    if stop is not None and index >= stop:
                        return
                    if index >= start:
                        cur = {"__key__": k, "__url__": url, "__index__": index, "__exts__": ()}
                if cur is None:
                    continue  # before ``start``: the member's data is skipped, not read
                cur["__exts__"] += (ext,)
                if ext in keep:
                    cur[ext] = tar.extractfile(m).read()
            end_error = _end_of_archive_error(tar)
        except Exception as exn:  # noqa: BLE001 - cut data, bad gzip stream, I/O error
            read.error = f"shard ends inside sample {index} ({first_line(exn)})"
            return
        if end_error is not None:
            read.error = end_error  # the last complete sample is still good
        if cur is not None:
            read.samples += 1
            yield cur


def _end_of_archive_error(tar: tarfile.TarFile) -> Optional[str]:
    """None if the member list ended at the archive's zero block (or exactly at the end of a
    seekable file); else why it ended."""
    f = tar.fileobj
    if not hasattr(f, "seek") or not getattr(f, "seekable", lambda: False)():
        return None  # a stream: only the recorded shard lengths can tell
    try:
        f.seek(tar.offset)
        block = f.read(tarfile.BLOCKSIZE)
    except Exception as exn:  # noqa: BLE001
        return f"shard ends with unreadable data at byte {tar.offset} ({first_line(exn)})"
    if block and block != bytes(len(block)):
        return f"shard ends with an invalid or cut tar header at byte {tar.offset} (truncated or corrupt)"
    return None

