#!/usr/bin/env python
"""Evaluate a timm model + weights file: top-1/top-5/loss, params, GFLOPs (fvcore), throughput, peak memory.

    python eval.py --weights output/bundled/weights/model.safetensors            # bundled test split
    python eval.py --model gka_small_patch16_224 --weights w.safetensors --data /data/in1k-wds --split val
    python eval.py --model gka_small_patch16_224 --weights w.safetensors --data /data/imagenet/val  # ImageFolder
    torchrun --nproc_per_node=8 eval.py ...                                      # split over GPUs

    python eval.py --weights output/bundled/best.pth                             # a training checkpoint

The weights load through timm's pretrained path (``pretrained_cfg_overlay=dict(file=...)``) with their own
classifier; the ``config.json`` that train.py writes next to exported weights, or the training checkpoint
itself, supplies the model name, its kwargs and the preprocessing (input size, mean/std, crop_pct), each of
which a flag can override (a warning line names every model arg that differs from the weights'). Weights
whose classifier does not match the model's class count are refused for accuracy (a fresh head would give
chance accuracy).
"""
import argparse
import json
import os
import sys


def parse_kv(items):
    from omegaconf import OmegaConf
    from gka_vision.engine.config import UserError
    bad = [i for i in items if "=" not in i]
    if bad:
        raise UserError(f"--model-kwargs need key=value, got {bad}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))


def check_args(args) -> None:
    """Argument values that would crash later or measure nothing; bad input ends main() with one line on
    stderr and exit code 2."""
    from gka_vision.engine.config import UserError
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0),
                             ("--bench-iters", args.bench_iters, 1), ("--bench-batch", args.bench_batch, 1),
                             ("--num-classes", args.num_classes, 1), ("--img-size", args.img_size, 1),
                             ("--in-chans", args.in_chans, 1), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1], got {args.crop_pct}")


def open_data(data: str, split):
    """(DataFolder, the split to evaluate on) for --data / --split: a shard folder (``_info.json``; by
    default its val, validation or test split) or an ImageFolder tree (by default its val/ sub-folder, else
    the tree itself); a --data or --split that names no data is a UserError."""
    from gka_vision.data.folder import DataFolder, DataFolderError
    from gka_vision.engine.config import UserError, resolve_data_root
    try:
        folder = DataFolder.open(resolve_data_root(data))
        return folder, folder.eval_split(split, "--split")
    except DataFolderError as e:
        raise UserError(str(e)) from None


def main(argv=None) -> int:
    from gka_vision.engine.config import UserError
    try:
        return _main(argv)
    except UserError as e:
        print(f"eval.py: {e}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="timm model name (default: from config.json next to --weights)")
    ap.add_argument("--weights", default=None, help=".safetensors or .pth weights (none: random init, for FLOPs)")
    ap.add_argument("--model-kwargs", nargs="*", default=[], help="extra create_model kwargs, key=value")
    ap.add_argument("--data", default="bundled", help="shard folder with _info.json, or an ImageFolder tree")
    ap.add_argument("--split", default=None, help="split name or shard pattern (default: val, else test)")
    ap.add_argument("--num-classes", type=int, default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--in-chans", type=int, default=None)
    ap.add_argument("--mean", type=float, nargs="+", default=None)
    ap.add_argument("--std", type=float, nargs="+", default=None)
    ap.add_argument("--crop-pct", type=float, default=None)
    ap.add_argument("--interpolation", default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    ap.add_argument("--no-accuracy", action="store_true", help="skip the validation pass")
    ap.add_argument("--no-flops", action="store_true", help="skip the fvcore count")
    ap.add_argument("--bench-batch", type=int, default=None, help="throughput batch size (default: --batch-size)")
    ap.add_argument("--bench-iters", type=int, default=5)
    ap.add_argument("--no-bench", action="store_true", help="skip the throughput measurement")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    check_args(args)
    folder, split = (None, None) if args.no_accuracy else open_data(args.data, args.split)

    import torch
    from gka_vision.engine.pretrained import inspect_weights, merge_model_args
    from gka_vision.engine.config import DataConfig, UserError
    from gka_vision.engine.distributed import cleanup, init_distributed
    from gka_vision.engine.flops import count_flops, count_params, throughput
    from gka_vision.engine.loop import amp_dtype, evaluate
    from gka_vision.engine.model import create_model, model_build_errors

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights is not None and not os.path.isfile(args.weights):
        print(f"eval.py: weights file {args.weights!r} does not exist", file=sys.stderr)
        return 2
    # the weights' own description: model name + args (training checkpoint or config.json), classifier
    # width and input channels (from the tensors), preprocessing; every flag overrides it
    try:
        info = inspect_weights(args.weights, args.model) if args.weights else None
    except UserError:
        raise
    except (KeyError, ValueError, OSError) as e:
        raise UserError(str(e).strip().splitlines()[0]) from None
    pcfg = dict(info.data) if info else {}
    name = args.model or (info.model_name if info else None)
    if name is None:
        raise UserError("give --model (the weights name no model: neither a train.py checkpoint nor "
                        "config.json beside them)")
    notes = []  # warning lines, printed once the model is built (a build error stays one line)
    if info and info.model_name and info.model_name != name:
        notes.append(f"the weights were saved from model {info.model_name!r}, evaluating {name!r} "
                        f"without their model args")
    kwargs, changed = merge_model_args(name, parse_kv(args.model_kwargs), info)
    notes += [f"--model-kwargs {k}={new!r} differs from the weights' {k}={old!r}" for k, old, new in changed]
    input_size = pcfg.get("input_size", [3, 224, 224])
    in_chans = args.in_chans or kwargs.get("in_chans") or (info and info.in_chans) or input_size[0]
    img_size = args.img_size or input_size[-1]
    if args.img_size and "img_size" in kwargs:
        kwargs["img_size"] = args.img_size
    kwargs["in_chans"] = in_chans
    data_classes = folder.num_classes if folder else None
    if args.num_classes:
        kwargs["num_classes"] = args.num_classes
    elif "num_classes" not in kwargs:
        n = info.num_classes if info and info.num_classes else data_classes
        if n is not None:
            kwargs["num_classes"] = n
    n_model = kwargs.get("num_classes", 1000)
    if info and not args.no_accuracy and info.num_classes != n_model:
        # a reset classifier is a random one: its accuracy would be chance, reported with exit code 0
        have = f"a {info.num_classes}-class classifier" if info.num_classes else "no classifier"
        raise UserError(f"the weights have {have} but the model would have {n_model} classes, so its head "
                        f"would be freshly initialised and the accuracy meaningless; evaluate with the weights' "
                        f"own head (drop --num-classes / num_classes=) or use --no-accuracy")
    if data_classes is not None and not args.no_accuracy and data_classes != n_model:
        notes.append(f"the model has {n_model} classes, the data's _info.json {data_classes}")
    dc = DataConfig(
        root=args.data, img_size=img_size, in_chans=in_chans,
        mean=list(args.mean or pcfg.get("mean", [0.485, 0.456, 0.406][:in_chans])),
        std=list(args.std or pcfg.get("std", [0.229, 0.224, 0.225][:in_chans])),
        crop_pct=args.crop_pct or pcfg.get("crop_pct", 0.875),
        interpolation=args.interpolation or pcfg.get("interpolation", "bicubic"),
        batch_size=args.batch_size, val_batch_size=args.batch_size, num_workers=args.workers,
    )

    ds = init_distributed(args.device)
    try:
        with model_build_errors(name, kwargs):
            model = create_model(name, kwargs, args.weights, info=info)
        model = model.to(ds.device).eval()
        for line in notes:
            print(f"eval.py: warning: {line}", file=sys.stderr)
        dtype = amp_dtype(args.amp, ds.device)
        res = {"model": name, "weights": args.weights, "model_args": kwargs, "params_m": count_params(model) / 1e6,
               "input_size": [in_chans, img_size, img_size], "device": str(ds.device), "world_size": ds.world_size}
        if not args.no_accuracy:
            from gka_vision.data.loader import build_val_loader
            loader, _ = build_val_loader(dc, folder.root, split)
            m = evaluate(model, loader, device=ds.device, amp_dtype=dtype, progress=ds.is_main)
            res.update(split=split, top1=m["top1"], top5=m["top5"], loss=m["loss"], count=m["count"])
        if ds.is_main and not args.no_flops:
            f = count_flops(model, (in_chans, img_size, img_size), device=ds.device)
            res.update(gflops=f["gflops"], flops_unsupported=f["unsupported"])
        if ds.is_main and not args.no_bench:
            res["throughput"] = throughput(model, args.bench_batch or args.batch_size, (in_chans, img_size, img_size),
                                           device=ds.device, amp_dtype=dtype, iters=args.bench_iters)
        if ds.is_main:
            lines = [f"model {name} ({res['params_m']:.2f}M params) at {in_chans}x{img_size}x{img_size}"]
            if "top1" in res:
                lines.append(f"{res['split'] or 'folder'}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
                             f"loss {res['loss']:.4f}  ({res['count']} images)")
            if "gflops" in res:
                lines.append(f"GFLOPs (fvcore, 1 MAC = 1 FLOP): {res['gflops']:.4f}"
                             + (f"  [uncounted ops: {res['flops_unsupported']}]" if res["flops_unsupported"] else ""))
            if "throughput" in res:
                t = res["throughput"]
                lines.append(f"throughput: {t['img_per_s']:.1f} img/s at batch {t['batch_size']} on {res['device']}; "
                             f"peak memory {t['peak_mem_mib']:.0f} MiB ({t['peak_mem_kind']})")
            print("\n".join(lines))
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(res, fh, indent=1)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
