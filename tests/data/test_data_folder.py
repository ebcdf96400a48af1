"""DataFolder, the one reader of what ``_info.json`` says: the class count, the split to train on and the split
to evaluate on, for shard folders and ImageFolder trees; train.py and eval.py pick the same default split."""
import json
import sys

import pytest

from gka_vision.data.folder import DataFolder, DataFolderError
from gka_vision.engine.config import BUNDLED_ROOT, ConfigError, DataConfig, check_splits

from fashion_mnist import REPO  # tests/fashion_mnist.py


def _shard_folder(root, splits, num_classes=10):
    root.mkdir(parents=True, exist_ok=True)
    (root / "_info.json").write_text(json.dumps({"num_classes": num_classes, "splits": {
        s: {"name": s, "num_samples": 1, "filenames": [f"{s}-000000.tar"], "shard_lengths": [1]} for s in splits}}))
    return DataFolder.open(root)


def _tree(root, *class_dirs):
    for d in class_dirs:
        (root / d).mkdir(parents=True)
    return DataFolder.open(root)


def test_bundled_sample():
    folder = DataFolder.open(BUNDLED_ROOT)
    assert folder.num_classes == 10 and sorted(folder.splits) == ["test", "train"]
    assert folder.eval_split() == "test" and folder.train_split("train") == "train"


@pytest.mark.parametrize("splits, expected", [
    (["train", "val", "validation", "test"], "val"),
    (["train", "validation", "test"], "validation"),
    (["train", "test"], "test"),
])
def test_default_eval_split_is_val_then_validation_then_test(tmp_path, splits, expected):
    assert _shard_folder(tmp_path, splits).eval_split() == expected


def test_named_splits_are_checked_against_info(tmp_path):
    folder = _shard_folder(tmp_path, ["train", "test"])
    assert folder.eval_split("train") == "train"
    with pytest.raises(DataFolderError, match=r"--split='val' is not a split of .*_info.json \(it has \['test', 'train'\]\)"):
        folder.eval_split("val", "--split")
    with pytest.raises(DataFolderError, match="data.train_split='bogus' is not a split"):
        folder.train_split("bogus", "data.train_split")
    pattern = "x-{000000..000003}.tar|40"  # a shard pattern needs no _info.json entry
    assert folder.eval_split(pattern) == pattern and folder.train_split(pattern) == pattern


def test_without_info_a_named_training_split_names_nothing(tmp_path):
    folder = DataFolder.open(tmp_path)
    assert folder.info is None and folder.num_classes is None and folder.splits == {}
    with pytest.raises(DataFolderError, match=r"has no _info.json, so data.train_split='train' names nothing"):
        folder.train_split("train", "data.train_split")
    assert folder.train_split("t-{0..1}.tar") == "t-{0..1}.tar"


def test_imagefolder_trees(tmp_path):
    split_tree = _tree(tmp_path / "a", "train/cat", "val/cat", "val/dog")
    assert split_tree.eval_split() == "val" and split_tree.eval_split("train") == "train"
    with pytest.raises(DataFolderError, match=r"--split='valid': .* no sub-folder 'valid'"):
        split_tree.eval_split("valid", "--split")
    flat = _tree(tmp_path / "b", "cat", "dog")
    assert flat.eval_split() == ""  # the tree itself
    (tmp_path / "c").mkdir()
    with pytest.raises(DataFolderError, match="neither a shard folder .* nor an ImageFolder tree"):
        DataFolder.open(tmp_path / "c").eval_split()


def test_unreadable_info_is_named(tmp_path):
    (tmp_path / "_info.json").write_text("{not json")
    with pytest.raises(DataFolderError, match="cannot read .*_info.json"):
        DataFolder.open(tmp_path)


def test_train_and_eval_pick_the_same_default_split(tmp_path):
    """train.py's data.val_split left unset and eval.py's --split left out choose the same split."""
    sys.path.insert(0, str(REPO))
    import eval as eval_script  # the repo's eval.py
    _shard_folder(tmp_path, ["train", "validation", "test"], num_classes=7)
    num_classes, val_split = check_splits(DataConfig(root=str(tmp_path)), str(tmp_path))
    _, split = eval_script.open_data(str(tmp_path), None)
    assert (num_classes, val_split) == (7, "validation") and split == val_split
    with pytest.raises(ConfigError, match="data.val_split='val' is not a split"):
        check_splits(DataConfig(root=str(tmp_path), val_split="val"), str(tmp_path))
    assert check_splits(DataConfig(root=str(tmp_path), num_classes=3), str(tmp_path))[0] == 3
