"""What a training step optimises with: timm's optimizer factory, the warmup + cosine schedule in updates,
and the loss (mixup / cutmix with soft targets, label smoothing, or plain cross-entropy)."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from .config import TrainConfig


def scaled_lr(cfg: TrainConfig, world_size: int) -> Tuple[float, int]:
    """(learning rate, global batch): ``optim.lr`` scaled linearly from ``optim.lr_base_size`` to the global
    batch (per-rank batch x accumulation steps x ranks) when that is set."""
    global_batch = cfg.data.batch_size * cfg.optim.accum_steps * world_size
    lr = cfg.optim.lr * (global_batch / cfg.optim.lr_base_size if cfg.optim.lr_base_size else 1.0)
    return lr, global_batch


def build_optimizer(model: torch.nn.Module, ocfg, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer factory: no weight decay for biases, norms and ``model.no_weight_decay()``;
    with ``layer_decay`` each layer group (``model.group_matcher``) gets lr x decay^(depth - layer)."""
    from timm.optim import create_optimizer_v2
    name = ocfg.opt.lower()
    extra = {"betas": tuple(ocfg.betas), "eps": ocfg.eps} if "adam" in name or "lamb" in name else {}
    return create_optimizer_v2(model, ocfg.opt, lr=lr, weight_decay=ocfg.weight_decay,
                               layer_decay=ocfg.layer_decay, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, batches_per_epoch: int):
    """(timm's CosineLRScheduler stepped once per optimizer update, updates per epoch): linear warmup for
    ``sched.warmup_epochs`` (at most all updates but one), then cosine to ``sched.min_lr``."""
    from timm.scheduler import CosineLRScheduler
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.optim.accum_steps)
    total = cfg.sched.epochs * updates_per_epoch
    warmup = min(int(round(cfg.sched.warmup_epochs * updates_per_epoch)), total - 1)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=max(1, total - warmup), lr_min=cfg.sched.min_lr, warmup_t=warmup,
        warmup_lr_init=cfg.sched.warmup_lr, warmup_prefix=True, t_in_epochs=False,
    )
    return scheduler, updates_per_epoch


def build_loss(cfg: TrainConfig, num_classes: int) -> Tuple[Optional[Callable], Callable]:
    """(mixup_fn or None, loss_fn): with mixup or cutmix the targets become soft (label smoothing folded
    in), otherwise label smoothing or plain cross-entropy on hard labels."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    a = cfg.aug
    if a.mixup > 0 or a.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                         switch_prob=a.mixup_switch_prob, mode=a.mixup_mode, label_smoothing=a.smoothing,
                         num_classes=num_classes)
        return mixup_fn, SoftTargetCrossEntropy()
    if a.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(a.smoothing)
    return None, torch.nn.CrossEntropyLoss()
