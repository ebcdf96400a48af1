"""``run(cfg)``: build everything from a TrainConfig, train, evaluate, checkpoint, export.

Single process (CPU or one GPU) or torchrun DDP (env://; NCCL on GPU, gloo on CPU). Every rank
reseeds ``random`` / ``numpy`` / ``torch`` from ``(seed, epoch, rank)`` at the start of each epoch and
the data order depends only on ``(seed, epoch)``, so a run resumed from the end of epoch ``e``
replays epochs ``e+1...`` exactly as the uninterrupted run would. Only a run that has done all
``sched.epochs`` exports weights; one stopped early is ``partial`` in summary.json, and a re-run with
nothing left to train says so and changes nothing.

``_run`` is the recipe; each of its steps is one function below, in the order they run.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..data.loader import build_train_loader, build_val_loader, val_coverage_warning
from ..data.order import mix_seed
from ..data.pipeline import SkipCounter
from ..data.skips import distinct_skips
from .checkpoint import (
    export_weights, load_checkpoint, model_state_from, rng_state, save_checkpoint, set_rng_state,
)
from .config import ConfigError, TrainConfig, check_splits, resolve_data_root, to_dict, to_yaml, uses_cudagraphs
from .distributed import DistState, all_reduce_sum, barrier, cleanup, init_distributed, rank_values
from .logger import RunLogger, plot_curves
from .loop import TrainState, amp_dtype, evaluate, train_one_epoch
from .model import (
    RUNTIME_KWARGS, create_model, model_build_errors, model_kwargs, one_line, pretrained_cfg_for,
    pretrained_model_kwargs,
)
from .optim import build_loss, build_optimizer, build_scheduler, scaled_lr

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "update", "best_top1", "rng")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Training:
    """The model of a run and everything that updates it; a checkpoint holds their states."""
    model: torch.nn.Module  # unwrapped: checkpoints, evaluation and export use it
    kwargs: dict  # its create_model kwargs
    optimizer: torch.optim.Optimizer
    amp_dtype: Optional[torch.dtype]
    scaler: Any = None  # GradScaler, fp16 only
    ema: Any = None  # timm's ModelEmaV3
    scheduler: Any = None
    net: Optional[torch.nn.Module] = None  # the model the loop trains: DDP-wrapped and/or compiled
    mixup_fn: Optional[Callable] = None  # mixup / cutmix on the batch, soft targets
    loss_fn: Optional[Callable] = None


@dataclass
class Data:
    """The run's data folder, its class count, and the loaders (with their datasets) of both splits."""
    root: str
    num_classes: int
    train_loader: Any
    train_set: Any
    val_loader: Any
    val_set: Any
    skips: tuple  # (train, val) SkipCounters: each bad sample counted once over the run


def run(cfg: TrainConfig) -> dict:
    ds = init_distributed(cfg.device)
    try:
        return _run(cfg, ds)
    finally:
        cleanup()


def _run(cfg: TrainConfig, ds: DistState) -> dict:
    """The recipe: data, model, optimizer and schedule; resume; the epochs; summary and export."""
    t_start = time.time()
    say = print if ds.is_main else (lambda *a, **k: None)
    if cfg.threads and ds.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    root = resolve_data_root(cfg.data.root)
    num_classes, val_split = check_splits(cfg.data, root)
    out = Path(cfg.output)

    model, kwargs = build_model(cfg, num_classes, ds, say)
    t = build_training(cfg, model, kwargs, ds)
    data = build_data(cfg, root, num_classes, val_split)
    lr, global_batch = scaled_lr(cfg, ds.world_size)
    t.scheduler, updates_per_epoch = build_scheduler(t.optimizer, cfg, len(data.train_loader))
    say(f"data {data.root}: {data.train_set.num_samples} train samples, {len(data.train_loader)} batches of "
        f"{cfg.data.batch_size} per rank x {ds.world_size} ranks; {updates_per_epoch} updates/epoch; "
        f"lr {lr:.3g} (global batch {global_batch}); amp {t.amp_dtype}")

    # resume, or report that nothing is left to train
    resume = agreed_resume_path(cfg, out, ds)
    state = resume_training(cfg, resume, t, ds, say) if resume else TrainState()
    first, target = epochs_to_run(cfg, state.epoch, resume)
    if first >= target:
        previous = nothing_to_train(cfg, out, first, resume, ds, say)
        if previous is not None:
            return previous
    if ds.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))

    # train, then write what the run did
    t.net = wrap_model(t.model, cfg, ds)
    t.mixup_fn, t.loss_fn = build_loss(cfg, num_classes)
    done, stopped_by, skipped = train_epochs(cfg, t, data, state, first, target, out, ds, say, t_start)
    summary = run_summary(cfg, t, state, first, done, stopped_by, skipped, ds, t_start)
    if done == cfg.sched.epochs and cfg.checkpoint.export:
        summary.update(export_and_verify(cfg, t, data, state.metrics, out, ds, say))
    elif done < cfg.sched.epochs:
        say(f"partial run: {done} of {cfg.sched.epochs} epochs done (stopped by {stopped_by}); no weights exported; "
            f"continue with checkpoint.resume=auto")
    if ds.is_main:
        summary["curves"] = plot_curves(str(out))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        say(f"done in {summary['train_time_s']:.0f}s; logs in {out} (steps.csv, epochs.csv, tensorboard/, curves.png)")
    return summary


# ---------------------------------------------------------------------------- model, optimizer, data

def build_model(cfg: TrainConfig, num_classes: int, ds: DistState, say: Callable) -> tuple:
    """(model on the device, its create_model kwargs): initialised from ``cfg.seed``, or fine-tuned from
    ``model.pretrained`` with the model args stored beside those weights."""
    seed_everything(cfg.seed)
    kwargs = model_kwargs(cfg, num_classes)
    with model_build_errors(cfg.model.name, kwargs):
        kwargs = pretrained_model_kwargs(cfg.model.name, kwargs, cfg.model.pretrained, say)
        model = create_model(cfg.model.name, kwargs, cfg.model.pretrained)
    model = model.to(ds.device)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    say(f"model {cfg.model.name}: {count_params(model) / 1e6:.2f}M params, kwargs {kwargs}"
        + (f", from {cfg.model.pretrained}" if cfg.model.pretrained else ""))
    return model, kwargs


def build_training(cfg: TrainConfig, model: torch.nn.Module, kwargs: dict, ds: DistState) -> Training:
    """The model with its optimizer (lr scaled to the global batch), mixed precision and EMA."""
    from timm.utils import ModelEmaV3
    dtype = amp_dtype(cfg.amp, ds.device)
    return Training(
        model=model, kwargs=kwargs, optimizer=build_optimizer(model, cfg.optim, scaled_lr(cfg, ds.world_size)[0]),
        amp_dtype=dtype, scaler=torch.amp.GradScaler(ds.device.type) if dtype == torch.float16 else None,
        ema=ModelEmaV3(model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup) if cfg.ema.enabled else None,
    )


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_data(cfg: TrainConfig, root: str, num_classes: int, val_split: str) -> Data:
    """The training loader (every sample once per epoch, order from ``cfg.seed`` and the epoch) and the
    validation loader of ``val_split``, each counting the bad samples it skips."""
    skips = (SkipCounter(), SkipCounter())
    train_loader, train_set = build_train_loader(cfg.data, cfg.aug, root, seed=cfg.seed, skip_counter=skips[0])
    val_loader, val_set = build_val_loader(cfg.data, root, val_split, skip_counter=skips[1])
    return Data(root, num_classes, train_loader, train_set, val_loader, val_set, skips)


def wrap_model(model: torch.nn.Module, cfg: TrainConfig, ds: DistState) -> torch.nn.Module:
    """The model as the loop trains it: DDP under torchrun, then ``torch.compile`` in ``model.compile_mode`` if
    asked."""
    if ds.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ds.local_rank] if ds.device.type == "cuda" else None)
    if cfg.model.compile:
        mode = cfg.model.compile_mode
        model = torch.compile(model, mode=None if mode == "default" else mode)
    return model


# ---------------------------------------------------------------------------- resume

def agreed_resume_path(cfg: TrainConfig, out: Path, ds: DistState) -> Optional[str]:
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


def resume_training(cfg: TrainConfig, resume: str, t: Training, ds: DistState, say: Callable) -> TrainState:
    """Load model, optimizer, schedule, EMA, loss scale, counters, metrics and RNG state from the training
    checkpoint ``resume``; every rank must have read the same epoch."""
    ckpt = load_checkpoint(resume, map_location=ds.device)
    lacking = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if lacking:
        raise ConfigError(f"checkpoint.resume: {resume} is not a training checkpoint of train.py (no {lacking}); "
                          f"to start from its weights use model.pretrained= instead")
    if ckpt.get("model_name") not in (None, cfg.model.name):
        raise ConfigError(f"checkpoint {resume} is for model {ckpt['model_name']!r}, config says {cfg.model.name!r}")
    try:
        t.model.load_state_dict(model_state_from(ckpt))
    except RuntimeError as e:
        raise ConfigError(f"checkpoint {resume} does not fit the model of this config (model.kwargs {t.kwargs}): "
                          f"{one_line(e)}") from None
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    if t.ema is not None:
        if ckpt.get("ema") is None:
            raise ConfigError(f"checkpoint {resume} has no EMA weights but ema.enabled=true")
        t.ema.module.load_state_dict(ckpt["ema"])
    if t.scaler is not None and ckpt.get("scaler") is not None:
        t.scaler.load_state_dict(ckpt["scaler"])
    state = TrainState(epoch=ckpt["epoch"] + 1, update=ckpt["update"], best_top1=ckpt["best_top1"],
                       metrics=ckpt.get("metrics") or {}, ema_metrics=ckpt.get("ema_metrics") or {})
    set_rng_state(ckpt["rng"])
    rows = rank_values([state.epoch, state.update], ds)
    if any(r != rows[0] for r in rows):
        seen = ", ".join(f"rank {i}: next epoch {int(r[0])}, {int(r[1])} updates" for i, r in enumerate(rows))
        raise ConfigError(f"the ranks resume from different checkpoints at {resume} ({seen}); "
                          f"output={cfg.output!r} must be one folder that every rank shares (shared storage)")
    say(f"resumed from {resume}: next epoch {state.epoch}, {state.update} updates done")
    return state


def epochs_to_run(cfg: TrainConfig, done: int, resume: Optional[str]) -> tuple:
    """(first, target): this run trains epochs first .. target - 1, where ``done`` epochs are done already
    and ``stop_after_epoch`` may end it before ``sched.epochs``."""
    epochs = cfg.sched.epochs
    if done > epochs:
        raise ConfigError(f"checkpoint {resume} has {done} epochs done, more than sched.epochs={epochs}: the schedule "
                          f"cannot shrink under a resumed run (start a new one with checkpoint.resume=null)")
    target = epochs if cfg.stop_after_epoch is None else min(cfg.stop_after_epoch + 1, epochs)
    return done, target


def nothing_to_train(cfg: TrainConfig, out: Path, done: int, resume: Optional[str], ds: DistState,
                     say: Callable) -> Optional[dict]:
    """A resumed run with no epoch left to train: its earlier summary, marked ``nothing_to_do``, when
    summary.json already describes it (the run then changes nothing); None when the summary (and, for a
    finished run, the export) must still be written."""
    epochs = cfg.sched.epochs
    if done == epochs:
        reason = f"the run is already finished: {resume} holds epoch {done - 1}, the last of sched.epochs={epochs}"
        hint = "start a new run with another output= or checkpoint.resume=null"
    else:
        reason = (f"stop_after_epoch={cfg.stop_after_epoch} is already reached: {resume} holds epochs "
                  f"0-{done - 1} of sched.epochs={epochs}")
        hint = "raise stop_after_epoch or leave it out to train on"
    current, old = summary_is_current(out, done, epochs, cfg.checkpoint.export, ds)
    if current:
        say(f"{reason}; nothing to train, and {out / 'summary.json'} already says so (left as it is; {hint})")
        return dict(old or {"status": "finished" if done == epochs else "partial", "epochs_done": done,
                            "epochs_total": epochs}, nothing_to_do=True)
    say(f"{reason}; nothing to train, writing its summary"
        + (" and export" if done == epochs and cfg.checkpoint.export else ""))
    return None


def summary_is_current(out: Path, done: int, epochs: int, export: bool, ds: DistState) -> tuple:
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


# ---------------------------------------------------------------------------- the epoch loop

def train_epochs(cfg: TrainConfig, t: Training, data: Data, state: TrainState, first: int, target: int,
                 out: Path, ds: DistState, say: Callable, t_start: float) -> tuple:
    """Epochs first .. target - 1: train, evaluate, log, checkpoint; stops early (resumably) when another
    epoch would overrun ``time_limit_min``. Returns (epochs done, what stopped the run before
    ``sched.epochs`` or None, skipped samples)."""
    logger = RunLogger(str(out), enabled=ds.is_main, start_epoch=first) if first < target else None
    done, stopped_by, skipped = first, None, 0
    for epoch in range(first, target):
        state.epoch = epoch
        with_eval = (epoch + 1) % cfg.eval_every == 0 or epoch == target - 1
        row, epoch_time = train_one_logged_epoch(cfg, t, data, state, logger, with_eval, ds, say)
        skipped = row["skipped_samples"]
        is_best = "val_top1" in row and row["val_top1"] > state.best_top1
        if is_best:
            state.best_top1 = row["val_top1"]
        logger.log_epoch(row)
        say(epoch_line(row, epoch_time))
        done = epoch + 1
        stop = done < target and over_time_limit(cfg.time_limit_min, t_start, epoch_time, ds)
        save_last = done % cfg.checkpoint.save_every == 0 or done == target or stop
        if ds.is_main and (save_last or is_best):
            save_checkpoints(cfg, t, state, out, last=save_last, best=is_best)
        barrier()
        if stop:
            stopped_by = "time_limit_min"
            say(f"stopping after epoch {epoch}: time_limit_min={cfg.time_limit_min} would be exceeded; "
                f"resume with checkpoint.resume=auto")
            break
    if logger is not None:
        logger.close()
    if done < cfg.sched.epochs and stopped_by is None:
        stopped_by = "stop_after_epoch"
    return done, stopped_by, skipped


def train_one_logged_epoch(cfg: TrainConfig, t: Training, data: Data, state: TrainState, logger: RunLogger,
                           with_eval: bool, ds: DistState, say: Callable) -> tuple:
    """Epoch ``state.epoch``, reseeded from (seed, epoch, rank): train (steps.csv), then evaluate if
    ``with_eval``. Returns (its epochs.csv row, its training time in s)."""
    epoch = state.epoch
    seed_everything(mix_seed(cfg.seed, epoch, ds.rank, 0xE90C))
    data.train_set.set_epoch(epoch)
    t0 = time.time()
    train_loss = train_one_epoch(
        t.net, data.train_loader, t.optimizer, t.scheduler, t.loss_fn, state, device=ds.device,
        amp_dtype=t.amp_dtype, scaler=t.scaler, mixup_fn=t.mixup_fn, ema=t.ema, accum_steps=cfg.optim.accum_steps,
        clip_grad=cfg.optim.clip_grad, log_every=cfg.log_interval, progress=cfg.progress and ds.is_main,
        print_lines=not cfg.progress and ds.is_main, logger=logger, cudagraphs=uses_cudagraphs(cfg.model),
    )
    epoch_time = time.time() - t0
    tl = all_reduce_sum(torch.tensor([train_loss, 1.0], dtype=torch.float64, device=ds.device))
    train_loss = (tl[0] / tl[1]).item()
    logger.log_steps(state.step_log)
    state.step_log.clear()
    row = {"epoch": epoch, "step": state.update, "train_loss": train_loss,
           "lr": t.optimizer.param_groups[0]["lr"], "epoch_time_s": round(epoch_time, 2)}
    if with_eval:
        row.update(validate(t, data, state, cfg.progress and ds.is_main, ds, say))
    row["skipped_samples"] = distinct_skips(list(data.skips))  # each bad sample once, all ranks
    return row, epoch_time


def validate(t: Training, data: Data, state: TrainState, progress: bool, ds: DistState, say: Callable) -> dict:
    """Evaluate the model (and its EMA) on the validation split into ``state.metrics`` (and
    ``state.ema_metrics``), with a warning when the split yielded fewer samples than it holds; returns
    the epochs.csv columns."""
    state.metrics = evaluate(t.model, data.val_loader, device=ds.device, amp_dtype=t.amp_dtype, progress=progress)
    cols = {"val_loss": state.metrics["loss"], "val_top1": state.metrics["top1"], "val_top5": state.metrics["top5"]}
    short = val_coverage_warning(data.val_set, state.metrics["count"])
    if short:
        say(f"warning: {short}")
    if t.ema is not None:
        state.ema_metrics = evaluate(t.ema.module, data.val_loader, device=ds.device, amp_dtype=t.amp_dtype)
        cols["ema_top1"] = state.ema_metrics["top1"]
    return cols


def epoch_line(row: dict, epoch_time: float) -> str:
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"
            + (f", val loss {row['val_loss']:.4f}, top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%"
               if "val_top1" in row else "")
            + (f", EMA top-1 {row['ema_top1']:.2f}%" if "ema_top1" in row else "")
            + f" ({epoch_time:.0f}s, {row['skipped_samples']} samples skipped)")


def over_time_limit(limit_min: Optional[float], t_start: float, epoch_time: float, ds: DistState) -> bool:
    """Whether another epoch as long as the last would overrun ``time_limit_min``; every rank takes the
    same decision."""
    if limit_min is None:
        return False
    over = (time.time() - t_start + epoch_time) / 60 > limit_min
    return all_reduce_sum(torch.tensor([float(over)], device=ds.device)).item() > 0


def save_checkpoints(cfg: TrainConfig, t: Training, state: TrainState, out: Path, *, last: bool, best: bool) -> None:
    """last.pth and/or best.pth: everything a resume restores (``CHECKPOINT_KEYS``, EMA, loss scale,
    metrics), plus the model name, kwargs and config that eval.py and fine-tuning read."""
    ckpt = {
        "model_name": cfg.model.name, "model_kwargs": t.kwargs, "config": to_dict(cfg),
        "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(), "ema": t.ema.module.state_dict() if t.ema is not None else None,
        "scaler": t.scaler.state_dict() if t.scaler is not None else None,
        "epoch": state.epoch, "update": state.update, "best_top1": state.best_top1,
        "metrics": state.metrics, "ema_metrics": state.ema_metrics, "rng": rng_state(),
    }
    if last:
        save_checkpoint(ckpt, out / "last.pth")
    if best:
        save_checkpoint(ckpt, out / "best.pth")


# ---------------------------------------------------------------------------- summary and export

def run_summary(cfg: TrainConfig, t: Training, state: TrainState, first: int, done: int, stopped_by: Optional[str],
                skipped: int, ds: DistState, t_start: float) -> dict:
    """summary.json: ``partial`` (resume with checkpoint.resume=auto) or ``finished``, the last metrics."""
    return {"model": cfg.model.name, "params": count_params(t.model),
            "status": "finished" if done == cfg.sched.epochs else "partial",
            "epochs_done": done, "epochs_total": cfg.sched.epochs, "epochs_this_run": done - first,
            "stopped_by": stopped_by, "updates": state.update, "best_top1": state.best_top1, "final": state.metrics,
            "final_ema": state.ema_metrics, "train_time_s": round(time.time() - t_start, 1),
            "world_size": ds.world_size, "rank": ds.rank, "device": str(ds.device),
            "param_checksum": float(sum(p.detach().double().sum().item() for p in t.model.parameters())),
            "skipped_samples": skipped}


def export_and_verify(cfg: TrainConfig, t: Training, data: Data, metrics: dict, out: Path, ds: DistState,
                      say: Callable) -> dict:
    """weights/ (and weights_ema/) for timm; with ``verify_export``, the file reloaded the way a user
    loads it and evaluated again. Returns the summary's ``weights`` (and ``reloaded``) entries."""
    pcfg = pretrained_cfg_for(t.model, cfg, data.num_classes)
    margs = {k: v for k, v in t.kwargs.items() if k not in RUNTIME_KWARGS}
    wdir = out / "weights"
    if ds.is_main:
        export_weights(t.model.state_dict(), wdir, model_name=cfg.model.name, pretrained_cfg=pcfg, model_args=margs)
        if t.ema is not None:
            export_weights(t.ema.module.state_dict(), out / "weights_ema", model_name=cfg.model.name,
                           pretrained_cfg=pcfg, model_args=margs)
        say(f"exported weights to {wdir / 'model.safetensors'}")
    res = {"weights": str(wdir / "model.safetensors")}
    barrier()
    if cfg.verify_export:
        # the user's path: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))
        reloaded = create_model(cfg.model.name, margs, str(wdir / "model.safetensors")).to(ds.device)
        res["reloaded"] = m2 = evaluate(reloaded, data.val_loader, device=ds.device, amp_dtype=t.amp_dtype)
        trained = (f"trained model: {metrics['top1']:.2f}%" if "top1" in metrics else
                   "the trained model has no accuracy to compare: its last epoch was not evaluated")
        say(f"weights reloaded through timm.create_model(pretrained=True, pretrained_cfg_overlay="
            f"dict(file=...)): top-1 {m2['top1']:.2f}% ({trained})")
    return res
