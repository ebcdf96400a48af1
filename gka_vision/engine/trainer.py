"""``run(cfg)``: build everything from a TrainConfig, train, evaluate, checkpoint, export.

Single process (CPU or one GPU) or torchrun DDP (env://; NCCL on GPU, gloo on CPU). Every rank
reseeds ``random`` / ``numpy`` / ``torch`` from ``(seed, epoch, rank)`` at the start of each epoch and
the data order depends only on ``(seed, epoch)``, so a run resumed from the end of epoch ``e``
replays epochs ``e+1...`` exactly as the uninterrupted run would. Only a run that has done all
``sched.epochs`` exports weights; one stopped early is ``partial`` in summary.json, and a re-run with
nothing left to train says so and changes nothing.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.loader import build_train_loader, build_val_loader, val_coverage_warning
from ..data.pipeline import SkipCounter, _mix_seed
from ..data.shards import load_info
from ..data.skips import distinct_skips
from .checkpoint import (
    export_weights, load_checkpoint, model_state_from, rng_state, save_checkpoint,
    set_rng_state,
)
from .config import ConfigError, TrainConfig, UserError, check_splits, resolve_data_root, to_dict, to_yaml
from .distributed import all_reduce_sum, barrier, cleanup, init_distributed, rank_values
from .logger import RunLogger, plot_curves
from .loop import TrainState, evaluate, train_one_epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_kwargs(cfg: TrainConfig, num_classes: int) -> dict:
    kw = dict(cfg.model.kwargs)
    kw.update(num_classes=num_classes, in_chans=cfg.data.in_chans)
    if cfg.model.drop_path > 0:
        kw["drop_path_rate"] = cfg.model.drop_path
    if cfg.model.drop_rate > 0:
        kw["drop_rate"] = cfg.model.drop_rate
    return kw


def create_model(name: str, kwargs: dict, pretrained: Optional[str] = None, info=None) -> torch.nn.Module:
    """timm.create_model; ``pretrained`` (a weights file) goes through timm's pretrained path with an
    overlay that describes the file as it is (its classifier width and input channels, read from the
    tensors), so a matching head is kept and a different one reset; the model's filter logs a warning for
    every head reset or shape adaptation. ``info``: the file's ``inspect_weights`` result, if already read."""
    import timm
    import gka_vision  # noqa: F401  (registers the GKA families with timm)
    from .pretrained import inspect_weights, pretrained_overlay
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: not registered in timm (GKA models: "
                         f"{timm.list_models('gka*')})")
    if pretrained is None:
        return timm.create_model(name, **kwargs)
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"model.pretrained {pretrained!r} does not exist")
    if info is None:
        info = inspect_weights(pretrained, name)  # refuses pickled objects before timm reads the file
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=pretrained_overlay(name, info), **kwargs)


def pretrained_model_kwargs(name: str, kwargs: dict, pretrained: Optional[str], say=print) -> dict:
    """Fine-tuning from ``model.pretrained``: the model args stored with the weights (training checkpoint
    or config.json), overridden by the run's own ``kwargs``; prints what came from the file and a warning
    line for each arg the run changes."""
    if not pretrained:
        return kwargs
    from .pretrained import inspect_weights, merge_model_args
    info = inspect_weights(pretrained, name)
    if info.model_name and info.model_name != name:
        say(f"warning: model.pretrained {pretrained} was saved from model {info.model_name!r}; building "
            f"{name!r} with the config's model args only")
        return kwargs
    merged, changed = merge_model_args(name, kwargs, info)
    taken = {k: v for k, v in merged.items() if k not in kwargs}
    if taken:
        say(f"model.pretrained: model args from {pretrained}: " + ", ".join(f"{k}={v!r}" for k, v in taken.items()))
    for k, old, new in changed:
        say(f"warning: model.pretrained: {k}={new!r} (run config) instead of the weights' {k}={old!r}")
    return merged


def pretrained_cfg_for(model: torch.nn.Module, cfg: TrainConfig, num_classes: int) -> dict:
    pc = dict(getattr(model, "pretrained_cfg", {}) or {})
    pc.update(
        num_classes=num_classes, input_size=(cfg.data.in_chans, cfg.data.img_size, cfg.data.img_size),
        mean=tuple(cfg.data.mean), std=tuple(cfg.data.std), crop_pct=cfg.data.crop_pct,
        interpolation=cfg.data.interpolation,
    )
    for k in ("file", "url", "hf_hub_id", "hf_hub_filename", "source"):
        pc.pop(k, None)
    return pc


def build_optimizer(model: torch.nn.Module, ocfg, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer factory: no weight decay for biases, norms and ``model.no_weight_decay()``;
    with ``layer_decay`` each layer group (``model.group_matcher``) gets lr x decay^(depth - layer)."""
    from timm.optim import create_optimizer_v2
    name = ocfg.opt.lower()
    extra = {"betas": tuple(ocfg.betas), "eps": ocfg.eps} if "adam" in name or "lamb" in name else {}
    return create_optimizer_v2(model, ocfg.opt, lr=lr, weight_decay=ocfg.weight_decay,
                               layer_decay=ocfg.layer_decay, **extra)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


def run(cfg: TrainConfig) -> dict:
    ds = init_distributed(cfg.device)
    try:
        return _run(cfg, ds)
    finally:
        cleanup()


@contextlib.contextmanager
def model_build_errors(name: str, kwargs: dict):
    """What a bad model argument raises while the model is built (an unknown kwarg, an image size the
    patch does not divide, a width the heads do not divide, GKA solver options out of range, a missing
    weights file or one that does not fit) becomes a UserError naming the model: one line, exit code 2."""
    try:
        yield
    except UserError:
        raise
    except (TypeError, ValueError, AssertionError, KeyError, FileNotFoundError) as e:
        raise UserError(f"model {name!r}: {_one_line(e)} (model kwargs {kwargs})") from None
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):
            raise
        raise UserError(f"model {name!r}: the weights do not fit the model built with kwargs {kwargs}: "
                        f"{_one_line(e)}") from None


def _one_line(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "update", "best_top1", "rng")


def _agreed_resume_path(cfg: TrainConfig, out: Path, ds) -> Optional[str]:
    """The checkpoint to resume from, decided from what every rank sees: each rank reports whether the
    file exists, and all ranks get the same answer or the same ConfigError (never some ranks resuming
    while others start over, which hangs in the first mismatched collective)."""
    resume = cfg.checkpoint.resume
    if not resume:
        return None
    path = str(out / "last.pth") if resume == "auto" else resume
    seen = [bool(r[0]) for r in rank_values([os.path.isfile(path)], ds)]
    if all(seen):
        return path
    if resume == "auto" and not any(seen):
        return None
    lacking = [r for r, s in enumerate(seen) if not s]
    if resume != "auto":
        raise ConfigError(f"checkpoint.resume={resume!r} does not exist"
                          + (f" on rank(s) {lacking} of {ds.world_size}" if ds.distributed else ""))
    raise ConfigError(
        f"checkpoint.resume=auto: rank(s) {[r for r, s in enumerate(seen) if s]} see {path} but rank(s) {lacking} "
        f"do not, so they would not resume from the same epoch; output={cfg.output!r} must be one folder that "
        f"every rank shares (shared storage, not a node-local disk)")


def _summary_is_current(out: Path, done: int, epochs: int, export: bool, ds) -> tuple:
    """(True, summary) when rank 0's summary.json already describes a run with ``done`` of ``epochs``
    epochs (and its export, when finished): re-running it has nothing to add."""
    ok, summary = False, None
    if ds.is_main:
        try:
            summary = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        finished = done == epochs
        ok = (isinstance(summary, dict) and summary.get("epochs_done") == done
              and summary.get("epochs_total") == epochs
              and summary.get("status") == ("finished" if finished else "partial")
              and not (finished and export and not (out / "weights" / "model.safetensors").exists()))
    return rank_values([ok], ds)[0][0] > 0, summary


def _run(cfg: TrainConfig, ds) -> dict:
    import timm
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

    t_start = time.time()
    if cfg.threads and ds.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    root = resolve_data_root(cfg.data.root)
    check_splits(cfg.data, root)
    num_classes = cfg.data.num_classes
    if num_classes is None:
        num_classes = load_info(root)["num_classes"]
    out = Path(cfg.output)
    say = print if ds.is_main else (lambda *a, **k: None)

    # ---- model, optimizer, schedule
    seed_everything(cfg.seed)
    kwargs = model_kwargs(cfg, num_classes)
    with model_build_errors(cfg.model.name, kwargs):
        kwargs = pretrained_model_kwargs(cfg.model.name, kwargs, cfg.model.pretrained, say)
        model = create_model(cfg.model.name, kwargs, cfg.model.pretrained)
    model = model.to(ds.device)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model {cfg.model.name}: {n_params / 1e6:.2f}M params, kwargs {kwargs}"
        + (f", from {cfg.model.pretrained}" if cfg.model.pretrained else ""))
    global_batch = cfg.data.batch_size * cfg.optim.accum_steps * ds.world_size
    lr = cfg.optim.lr * (global_batch / cfg.optim.lr_base_size if cfg.optim.lr_base_size else 1.0)
    optimizer = build_optimizer(model, cfg.optim, lr)
    amp_dtype = _amp_dtype(cfg.amp, ds.device)
    scaler = torch.amp.GradScaler(ds.device.type) if amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup) if cfg.ema.enabled else None

    # ---- data
    train_skips, val_skips = SkipCounter(), SkipCounter()
    train_loader, train_ds = build_train_loader(cfg.data, cfg.aug, root, seed=cfg.seed, skip_counter=train_skips)
    val_loader, val_ds = build_val_loader(cfg.data, root, skip_counter=val_skips)
    updates_per_epoch = math.ceil(len(train_loader) / cfg.optim.accum_steps)
    total = cfg.sched.epochs * updates_per_epoch
    warmup = min(int(round(cfg.sched.warmup_epochs * updates_per_epoch)), total - 1)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=max(1, total - warmup), lr_min=cfg.sched.min_lr, warmup_t=warmup,
        warmup_lr_init=cfg.sched.warmup_lr, warmup_prefix=True, t_in_epochs=False,
    )
    say(f"data {root}: {train_ds.num_samples} train samples, {len(train_loader)} batches of "
        f"{cfg.data.batch_size} per rank x {ds.world_size} ranks; {updates_per_epoch} updates/epoch; "
        f"lr {lr:.3g} (global batch {global_batch}); amp {amp_dtype}")

    # ---- resume
    state = TrainState()
    metrics, ema_metrics = {}, {}
    resume = _agreed_resume_path(cfg, out, ds)
    if resume:
        ckpt = load_checkpoint(resume, map_location=ds.device)
        lacking = [k for k in CHECKPOINT_KEYS if k not in ckpt]
        if lacking:
            raise ConfigError(f"checkpoint.resume: {resume} is not a training checkpoint of train.py (no {lacking}); "
                              f"to start from its weights use model.pretrained= instead")
        if ckpt.get("model_name") not in (None, cfg.model.name):
            raise ConfigError(f"checkpoint {resume} is for model {ckpt['model_name']!r}, config says {cfg.model.name!r}")
        try:
            model.load_state_dict(model_state_from(ckpt))
        except RuntimeError as e:
            raise ConfigError(f"checkpoint {resume} does not fit the model of this config (model.kwargs {kwargs}): "
                              f"{_one_line(e)}") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            if ckpt.get("ema") is None:
                raise ConfigError(f"checkpoint {resume} has no EMA weights but ema.enabled=true")
            ema.module.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        state.epoch, state.update, state.best_top1 = ckpt["epoch"] + 1, ckpt["update"], ckpt["best_top1"]
        metrics, ema_metrics = ckpt.get("metrics") or {}, ckpt.get("ema_metrics") or {}
        set_rng_state(ckpt["rng"])
        rows = rank_values([state.epoch, state.update], ds)
        if any(r != rows[0] for r in rows):
            seen = ", ".join(f"rank {i}: next epoch {int(r[0])}, {int(r[1])} updates" for i, r in enumerate(rows))
            raise ConfigError(f"the ranks resume from different checkpoints at {resume} ({seen}); "
                              f"output={cfg.output!r} must be one folder that every rank shares (shared storage)")
        say(f"resumed from {resume}: next epoch {state.epoch}, {state.update} updates done")

    # epochs are counted as done (done = the next epoch to run); this run trains epochs done .. target - 1
    epochs = cfg.sched.epochs
    done = first = state.epoch
    if done > epochs:
        raise ConfigError(f"checkpoint {resume} has {done} epochs done, more than sched.epochs={epochs}: the schedule "
                          f"cannot shrink under a resumed run (start a new one with checkpoint.resume=null)")
    target = epochs if cfg.stop_after_epoch is None else min(cfg.stop_after_epoch + 1, epochs)
    if done >= target:
        if done == epochs:
            reason = f"the run is already finished: {resume} holds epoch {done - 1}, the last of sched.epochs={epochs}"
            hint = "start a new run with another output= or checkpoint.resume=null"
        else:
            reason = (f"stop_after_epoch={cfg.stop_after_epoch} is already reached: {resume} holds epochs "
                      f"0-{done - 1} of sched.epochs={epochs}")
            hint = "raise stop_after_epoch or leave it out to train on"
        current, old = _summary_is_current(out, done, epochs, cfg.checkpoint.export, ds)
        if current:
            say(f"{reason}; nothing to train, and {out / 'summary.json'} already says so (left as it is; {hint})")
            return dict(old or {"status": "finished" if done == epochs else "partial", "epochs_done": done,
                                "epochs_total": epochs}, nothing_to_do=True)
        say(f"{reason}; nothing to train, writing its summary"
            + (" and export" if done == epochs and cfg.checkpoint.export else ""))

    if ds.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))

    # ---- wrap
    model_plain = model
    if ds.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ds.local_rank] if ds.device.type == "cuda" else None)
    if cfg.model.compile:
        model = torch.compile(model)

    mixup_fn = None
    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=cfg.aug.mixup, cutmix_alpha=cfg.aug.cutmix, prob=cfg.aug.mixup_prob,
                         switch_prob=cfg.aug.mixup_switch_prob, mode=cfg.aug.mixup_mode,
                         label_smoothing=cfg.aug.smoothing, num_classes=num_classes)
        loss_fn = SoftTargetCrossEntropy()
    elif cfg.aug.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(cfg.aug.smoothing)
    else:
        loss_fn = torch.nn.CrossEntropyLoss()

    logger = RunLogger(str(out), enabled=ds.is_main, start_epoch=done) if done < target else None
    stopped_by = None
    skipped = 0
    for epoch in range(done, target):
        state.epoch = epoch
        seed_everything(_mix_seed(cfg.seed, epoch, ds.rank, 0xE90C))
        train_ds.set_epoch(epoch)
        t0 = time.time()
        train_loss = train_one_epoch(
            model, train_loader, optimizer, scheduler, loss_fn, state, device=ds.device, amp_dtype=amp_dtype,
            scaler=scaler, mixup_fn=mixup_fn, ema=ema, accum_steps=cfg.optim.accum_steps,
            clip_grad=cfg.optim.clip_grad, log_every=cfg.log_interval, progress=cfg.progress and ds.is_main,
            print_lines=not cfg.progress and ds.is_main, logger=logger,
        )
        epoch_time = time.time() - t0
        tl = all_reduce_sum(torch.tensor([train_loss, 1.0], dtype=torch.float64, device=ds.device))
        train_loss = (tl[0] / tl[1]).item()
        logger.log_steps(state.step_log)
        state.step_log.clear()
        row = {"epoch": epoch, "step": state.update, "train_loss": train_loss,
               "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": round(epoch_time, 2)}
        if (epoch + 1) % cfg.eval_every == 0 or epoch == target - 1:
            metrics = evaluate(model_plain, val_loader, device=ds.device, amp_dtype=amp_dtype,
                               progress=cfg.progress and ds.is_main)
            row.update(val_loss=metrics["loss"], val_top1=metrics["top1"], val_top5=metrics["top5"])
            short = val_coverage_warning(val_ds, metrics["count"])
            if short:
                say(f"warning: {short}")
            if ema is not None:
                ema_metrics = evaluate(ema.module, val_loader, device=ds.device, amp_dtype=amp_dtype)
                row["ema_top1"] = ema_metrics["top1"]
        skipped = row["skipped_samples"] = distinct_skips([train_skips, val_skips])  # each bad sample once, all ranks
        is_best = "val_top1" in row and row["val_top1"] > state.best_top1
        if is_best:
            state.best_top1 = row["val_top1"]
        logger.log_epoch(row)
        say(f"epoch {epoch}: train loss {train_loss:.4f}"
            + (f", val loss {row['val_loss']:.4f}, top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%"
               if "val_top1" in row else "")
            + (f", EMA top-1 {row['ema_top1']:.2f}%" if "ema_top1" in row else "")
            + f" ({epoch_time:.0f}s, {row['skipped_samples']} samples skipped)")
        done = epoch + 1
        stop = False
        if cfg.time_limit_min is not None and done < target:
            # stop if another epoch would overrun the budget; every rank takes the same decision
            over = (time.time() - t_start + epoch_time) / 60 > cfg.time_limit_min
            stop = all_reduce_sum(torch.tensor([float(over)], device=ds.device)).item() > 0
        save_last = done % cfg.checkpoint.save_every == 0 or done == target or stop
        if ds.is_main and (save_last or is_best):
            ckpt = {
                "model_name": cfg.model.name, "model_kwargs": kwargs, "config": to_dict(cfg),
                "model": model_plain.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch, "update": state.update, "best_top1": state.best_top1,
                "metrics": metrics, "ema_metrics": ema_metrics, "rng": rng_state(),
            }
            if save_last:
                save_checkpoint(ckpt, out / "last.pth")
            if is_best:
                save_checkpoint(ckpt, out / "best.pth")
        barrier()
        if stop:
            stopped_by = "time_limit_min"
            say(f"stopping after epoch {epoch}: time_limit_min={cfg.time_limit_min} would be exceeded; "
                f"resume with checkpoint.resume=auto")
            break
    if done < epochs and stopped_by is None:
        stopped_by = "stop_after_epoch"

    finished = done == epochs
    summary = {"model": cfg.model.name, "params": n_params,
               "status": "finished" if finished else "partial",  # partial: resume with checkpoint.resume=auto
               "epochs_done": done, "epochs_total": epochs, "epochs_this_run": done - first, "stopped_by": stopped_by,
               "updates": state.update, "best_top1": state.best_top1, "final": metrics,
               "final_ema": ema_metrics, "train_time_s": round(time.time() - t_start, 1),
               "world_size": ds.world_size, "rank": ds.rank, "device": str(ds.device),
               "param_checksum": float(sum(p.detach().double().sum().item() for p in model_plain.parameters())),
               "skipped_samples": skipped}
    if finished and cfg.checkpoint.export:
        pcfg = pretrained_cfg_for(model_plain, cfg, num_classes)
        margs = {k: v for k, v in kwargs.items() if k not in ("drop_path_rate", "drop_rate")}
        wdir = out / "weights"
        if ds.is_main:
            export_weights(model_plain.state_dict(), wdir, model_name=cfg.model.name, pretrained_cfg=pcfg,
                           model_args=margs)
            if ema is not None:
                export_weights(ema.module.state_dict(), out / "weights_ema", model_name=cfg.model.name,
                               pretrained_cfg=pcfg, model_args=margs)
            say(f"exported weights to {wdir / 'model.safetensors'}")
        summary["weights"] = str(wdir / "model.safetensors")
        barrier()
        if cfg.verify_export:
            # the user's path: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))
            reloaded = create_model(cfg.model.name, margs, str(wdir / "model.safetensors")).to(ds.device)
            m2 = evaluate(reloaded, val_loader, device=ds.device, amp_dtype=amp_dtype)
            summary["reloaded"] = m2
            trained = (f"trained model: {metrics['top1']:.2f}%" if "top1" in metrics else
                       "the trained model has no accuracy to compare: its last epoch was not evaluated")
            say(f"weights reloaded through timm.create_model(pretrained=True, pretrained_cfg_overlay="
                f"dict(file=...)): top-1 {m2['top1']:.2f}% ({trained})")
    elif not finished:
        say(f"partial run: {done} of {epochs} epochs done (stopped by {stopped_by}); no weights exported; "
            f"continue with checkpoint.resume=auto")
    if ds.is_main:
        if logger is not None:
            logger.close()
        png = plot_curves(str(out))
        summary["curves"] = png
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        say(f"done in {summary['train_time_s']:.0f}s; logs in {out} (steps.csv, epochs.csv, tensorboard/, curves.png)")
    return summary
