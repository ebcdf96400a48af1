"""What a data folder offers train.py and eval.py: how many classes, and which split to train and evaluate on.

A data folder is either a shard folder, described by the ``_info.json`` that ``make_shards`` writes beside
the shards (split names with their shard files and lengths, the class names and their count), or an
ImageFolder tree (``<class>/<image>``, or ``<split>/<class>/<image>``). A split is named either as a split of
``_info.json``, as a shard pattern (``name-{000000..000009}.tar|N``, anything with ``.tar`` in it), or, for
evaluation on an ImageFolder tree, as one of its sub-folders. ``DataFolder`` is the one place that decides
what ``_info.json`` says about classes and splits.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

INFO_FILE = "_info.json"
EVAL_SPLITS = ("val", "validation", "test")  # the default evaluation split: the first that _info.json lists
SHARD_PATTERN_EXAMPLE = "name-{000000..000009}.tar|N"


class DataFolderError(ValueError):
    """A data folder or split that names no data; the message says what the folder holds."""


def is_shard_pattern(split: str) -> bool:
    return ".tar" in split


@dataclass(frozen=True)
class DataFolder:
    root: str
    info: Optional[dict] = None  # the parsed _info.json; None: not a shard folder

    @classmethod
    def open(cls, root: str | os.PathLike) -> "DataFolder":
        path = os.path.join(root, INFO_FILE)
        if not os.path.isfile(path):
            return cls(str(root))
        try:
            with open(path) as f:
                return cls(str(root), json.load(f))
        except (OSError, ValueError) as e:
            raise DataFolderError(f"cannot read {path}: {e}") from None

    @property
    def info_path(self) -> str:
        return os.path.join(self.root, INFO_FILE)

    @property
    def splits(self) -> dict:
        return dict((self.info or {}).get("splits", {}))

    @property
    def num_classes(self) -> Optional[int]:
        """The class count of ``_info.json`` (None without one)."""
        return (self.info or {}).get("num_classes")

    def train_split(self, split: str, what: str = "split") -> str:
        """``split`` if it names shards here (a split of ``_info.json`` or a shard pattern); ``what`` names
        the setting in the error message (``data.train_split``)."""
        if not is_shard_pattern(split):
            if self.info is None:
                raise DataFolderError(
                    f"{self.root} has no {INFO_FILE}, so {what}={split!r} names nothing: give a shard folder made "
                    f"by `python -m gka_vision.tools.make_shards`, or a shard pattern such as "
                    f"{what}='{SHARD_PATTERN_EXAMPLE}'")
            self._check_listed(split, what)
        return split

    def eval_split(self, split: Optional[str] = None, what: str = "split") -> str:
        """The split to evaluate on: ``split`` if given and it names data here (a split of ``_info.json``, a
        shard pattern, or a sub-folder of an ImageFolder tree); by default the first of val, validation, test
        that ``_info.json`` lists (test when it lists none), or on an ImageFolder tree its val/ sub-folder, or
        '' (the tree itself). ``what`` names the setting in the error message (``--split``)."""
        if split is not None and is_shard_pattern(split):
            return split
        if self.info is not None:
            if split is None:
                return next((s for s in EVAL_SPLITS if s in self.splits), EVAL_SPLITS[-1])
            self._check_listed(split, what)
            return split
        if split is None:
            split = "val" if os.path.isdir(os.path.join(self.root, "val")) else ""
        elif not os.path.isdir(os.path.join(self.root, split)):
            raise DataFolderError(f"{what}={split!r}: {self.root} has no {INFO_FILE} (not a shard folder) and no "
                                  f"sub-folder {split!r} (not an ImageFolder tree with that split)")
        folder = os.path.join(self.root, split) if split else self.root
        if not any(e.is_dir() for e in os.scandir(folder)):
            raise DataFolderError(f"{folder}: neither a shard folder (no {INFO_FILE}) nor an ImageFolder tree "
                                  f"(no class sub-folders)")
        return split

    def _check_listed(self, split: str, what: str) -> None:
        if split not in self.splits:
            raise DataFolderError(f"{what}={split!r} is not a split of {self.info_path} "
                                  f"(it has {sorted(self.splits)})")
