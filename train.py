#!/usr/bin/env python
"""Train a timm / GKA model from webdataset shards.

    python train.py                                   # the bundled Fashion-MNIST sample, small GKA model, CPU
    python train.py --config configs/imagenet/gka_small.yaml data.root=/data/in1k-wds optim.lr=1e-3
    torchrun --nproc_per_node=8 train.py --config configs/imagenet/gka_tiny.yaml data.root=/data/in1k-wds
    python train.py --config ... checkpoint.resume=auto          # continue from <output>/last.pth
    python train.py --print-config [--config ...] [key=value ...] # show the merged config and exit

Trailing ``key=value`` arguments override the YAML (omegaconf dotlist); unknown keys are errors.
Exit codes: 0 done (also a partial run stopped by stop_after_epoch / time_limit_min, and a re-run
with nothing left to train), 2 bad input (one line on stderr), 1 a failure such as a full disk.
"""
import argparse
import os
import sys

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "fashion_mnist", "bundled.yaml")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    ap.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-3")
    args = ap.parse_args(argv)

    from gka_vision.engine.config import ConfigError, UserError, load_config, to_yaml
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    from gka_vision.engine.checkpoint import NoSpaceError
    from gka_vision.engine.trainer import run
    rank = int(os.environ.get("RANK", 0))
    where = f"train.py (rank {rank})" if rank else "train.py"
    try:
        run(cfg)
    except UserError as e:
        print(f"{where}: {e}", file=sys.stderr)
        return 2
    except NoSpaceError as e:
        print(f"{where}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
