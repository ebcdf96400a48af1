"""timm transforms and DataLoaders over shard folders (and ImageFolder trees for evaluation).

Importing this module makes timm's RandAugment posterize ops accept 0 kept bits (a black image)
again: Pillow >= 13 raises a ValueError for them, which would end a training run at a random image.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from PIL import ImageOps
from timm.data import create_transform

from .folder import DataFolder, is_shard_pattern
from .pipeline import FolderDataset, ShardDataset, SkipCounter, dist_info, expand_urls


def _posterize(img, bits_to_keep, **__):
    """timm's posterize op, also for 0 bits kept (a black image, as Pillow gave before it began to
    refuse ``bits < 1``): RandAugment's increasing-magnitude posterize keeps 4 - 4 = 0 bits at
    magnitude 10, which rand-m9-mstd0.5 draws."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, int(bits_to_keep))


def _patch_timm_posterize() -> None:
    from timm.data import auto_augment
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if name in auto_augment.NAME_TO_OP:
            auto_augment.NAME_TO_OP[name] = _posterize


_patch_timm_posterize()


def build_transform(data_cfg, aug_cfg=None, *, train: bool):
    """timm's ImageNet transforms: RandomResizedCrop/flip/RandAugment/RandomErasing for training,
    resize by ``crop_pct`` + center crop for evaluation; normalised with the config's mean/std."""
    common = dict(
        input_size=(data_cfg.in_chans, data_cfg.img_size, data_cfg.img_size),
        mean=tuple(data_cfg.mean), std=tuple(data_cfg.std), interpolation=data_cfg.interpolation,
    )
    if not train:
        return create_transform(**common, is_training=False, crop_pct=data_cfg.crop_pct)
    a = aug_cfg
    return create_transform(
        **common, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
        color_jitter=a.color_jitter, auto_augment=a.auto_augment, re_prob=a.re_prob,
        re_mode=a.re_mode, re_count=a.re_count,
    )


def _loader(dataset, num_workers: int, pin_memory: bool, batch_size=None, seed=None):
    kw = dict(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory and torch.cuda.is_available())
    if num_workers > 0:
        kw.update(persistent_workers=False, prefetch_factor=4)
    return torch.utils.data.DataLoader(dataset, **kw)


def _num_classes(data_cfg, root: str) -> Optional[int]:
    """The config's class count, else ``_info.json``'s (labels are checked against it)."""
    if data_cfg.num_classes is not None:
        return data_cfg.num_classes
    return DataFolder.open(root).num_classes


def build_train_loader(data_cfg, aug_cfg, root: str, *, seed: int, skip_counter: Optional[SkipCounter] = None):
    urls, lengths, num = expand_urls(root, data_cfg.train_split)
    ds = ShardDataset(
        urls, build_transform(data_cfg, aug_cfg, train=True), data_cfg.batch_size, train=True,
        num_samples=num, shard_lengths=lengths, num_workers=data_cfg.num_workers, seed=seed,
        shuffle_buffer=data_cfg.shuffle_buffer, in_chans=data_cfg.in_chans, skip_counter=skip_counter,
        num_classes=_num_classes(data_cfg, root), resample=data_cfg.resample,
    )
    return _loader(ds, data_cfg.num_workers, data_cfg.pin_memory), ds


def build_val_loader(data_cfg, root: str, split: Optional[str] = None, *, skip_counter: Optional[SkipCounter] = None):
    """Validation over every sample once, split across ranks. ``root`` may be a shard folder
    (with ``_info.json`` or a shard pattern as ``split``) or an ImageFolder tree; ``split`` (default:
    ``data_cfg.val_split``; None there: ``DataFolder.eval_split``'s choice) is checked against it."""
    folder = DataFolder.open(root)
    split = folder.eval_split(data_cfg.val_split if split is None else split)
    bs = data_cfg.val_batch_size or 2 * data_cfg.batch_size
    transform = build_transform(data_cfg, train=False)
    if folder.info is None and not is_shard_pattern(split):
        ds = FolderDataset(os.path.join(root, split) if split else root, transform, in_chans=data_cfg.in_chans)
        return _loader(ds, data_cfg.num_workers, data_cfg.pin_memory, batch_size=bs), ds
    urls, lengths, num = expand_urls(root, split)
    # never more workers than this rank has shards, so no worker idles with an empty stream
    rank, world = dist_info()
    n_local = len(urls[rank::world])
    workers = max(0, min(data_cfg.num_workers, n_local))
    ds = ShardDataset(urls, transform, bs, train=False, num_samples=num, shard_lengths=lengths,
                      num_workers=workers, in_chans=data_cfg.in_chans, skip_counter=skip_counter,
                      num_classes=_num_classes(data_cfg, root))
    return _loader(ds, workers, data_cfg.pin_memory), ds


def val_coverage_warning(dataset, seen: int) -> Optional[str]:
    """A line saying that validation covered fewer samples than the split holds, or None.
    ``seen`` is the count over all ranks (``evaluate()``'s ``count``)."""
    expected = getattr(dataset, "expected_samples", None)
    if expected is None or seen >= expected:
        return None
    return (f"validation saw {seen} of the {expected} samples of the split ({expected - seen} missing or skipped: "
            "see the warnings about bad samples and shards); the accuracy covers only those it saw")
