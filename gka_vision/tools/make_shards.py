"""Write webdataset shards from an ImageFolder tree or Fashion-MNIST's IDX files.

ImageNet (one folder per synset under train/ and val/; val must be sorted into class folders):

    python -m gka_vision.tools.make_shards imagefolder --src /data/imagenet/train --out /data/in1k-wds \\
        --split train --prefix imagenet1k --samples-per-shard 1000
    python -m gka_vision.tools.make_shards imagefolder --src /data/imagenet/val --out /data/in1k-wds \\
        --split val --prefix imagenet1k --samples-per-shard 1000 --classes-from /data/imagenet/train

Fashion-MNIST (the four *-ubyte[.gz] files):

    python -m gka_vision.tools.make_shards fashion-mnist --src path/to/fashion-mnist --out data/fmnist

Image bytes are written as they are (JPEG stays JPEG; Fashion-MNIST becomes PNG), shuffled across
shards; ``_info.json`` and ``class_index.json`` are written next to the shards.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from gka_vision.data.shards import (
    fashion_mnist_samples, find_classes, imagefolder_samples, write_split,
)

# where --src defaults to: the folder named by this environment variable
FMNIST_DIR_ENV = "GKA_FASHION_MNIST_DIR"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gka_vision.tools.make_shards", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="source", required=True)

    f = sub.add_parser("imagefolder", help="an ImageFolder tree: <src>/<class>/<image>")
    f.add_argument("--src", required=True)
    f.add_argument("--split", required=True, help="split name written to _info.json, e.g. train or val")
    f.add_argument("--classes-from", default=None,
                   help="take the class list from this ImageFolder root (use the train folder for val)")

    m = sub.add_parser("fashion-mnist", help="Fashion-MNIST IDX files (train and test)")
    m.add_argument("--src", default=None, help=f"folder with the IDX files (default: ${FMNIST_DIR_ENV})")
    m.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    m.add_argument("--train-per-class", type=int, default=None, help="balanced subset: images per class in train")
    m.add_argument("--test-per-class", type=int, default=None, help="balanced subset: images per class in test")

    for p in (f, m):
        p.add_argument("--out", required=True, help="output folder for the shards")
        p.add_argument("--prefix", default=None, help="shard name prefix, e.g. imagenet1k")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--samples-per-shard", type=int, default=1000)
        g.add_argument("--num-shards", type=int, default=None)
        p.add_argument("--seed", type=int, default=0, help="seed of the cross-shard shuffle")
        p.add_argument("--compress", action="store_true", help="write gzip-compressed .tar.gz shards")
    args = ap.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _run(args, ap)
        finally:
            for w in caught:  # what was left out, as plain lines on stderr
                print(f"warning: {w.message}", file=sys.stderr)


def _run(args, ap) -> int:
    t0 = time.time()
    kw = dict(samples_per_shard=args.samples_per_shard, num_shards=args.num_shards, prefix=args.prefix, seed=args.seed,
              compress=args.compress)
    if args.source == "imagefolder":
        classes = find_classes(args.classes_from) if args.classes_from else None
        samples, classes = imagefolder_samples(args.src, classes)
        entry = write_split(samples, args.out, args.split, classes, **kw)
        _report(args.split, entry)
    else:
        src = args.src
        if src is None:
            src = os.environ.get(FMNIST_DIR_ENV) or None
            if src is None:
                ap.error(f"--src not given and {FMNIST_DIR_ENV} is not set")
        for split in args.splits:
            per_class = args.train_per_class if split == "train" else args.test_per_class
            samples, classes = fashion_mnist_samples(src, split, per_class=per_class, seed=args.seed)
            entry = write_split(samples, args.out, split, classes, **kw)
            _report(split, entry)
    print(f"done in {time.time() - t0:.1f}s -> {args.out}")
    return 0


def _report(split: str, entry: dict) -> None:
    print(f"{split}: {entry['num_samples']} samples in {len(entry['filenames'])} shards "
          f"({entry['filenames'][0]} ... {entry['filenames'][-1]})")


if __name__ == "__main__":
    sys.exit(main())
