"""The train and eval loops: ``train_one_epoch`` and ``evaluate``."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum


@dataclass
class TrainState:
    """Counters and the last evaluation results, which a checkpoint must restore."""
    epoch: int = 0  # the next epoch to run
    update: int = 0  # optimizer updates done so far
    best_top1: float = -1.0
    metrics: dict = field(default_factory=dict)  # the last evaluation of the model (evaluate())
    ema_metrics: dict = field(default_factory=dict)  # and of its EMA
    step_log: List[dict] = field(default_factory=list)


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the ``amp`` setting: auto is bf16 on CUDA and off (None) on the CPU."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: Callable,
    state: TrainState,
    *,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    scaler=None,
    mixup_fn=None,
    ema=None,
    accum_steps: int = 1,
    clip_grad: Optional[float] = None,
    log_every: int = 20,
    progress: bool = False,
    print_lines: bool = False,
    logger=None,
    cudagraphs: bool = False,
) -> float:
    """One pass over ``loader``; returns this rank's mean training loss. Appends per-update
    ``{epoch, step, loss, lr}`` rows to ``state.step_log``.

    cudagraphs: ``model`` was compiled in a mode that records CUDA graphs (reduce-overhead, max-autotune). The first
    micro-step of each update starts a new graph iteration, whose replays may reuse the memory of the last one's
    outputs: by then the loop has read the loss and set the gradients to None. Later micro-steps of an update do
    not, since the gradients they accumulate into are outputs of the first one's backward."""
    model.train()
    n_batches = len(loader)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_batches, desc=f"epoch {state.epoch}", unit="batch", dynamic_ncols=True, leave=True)
    loss_sum, loss_n, micro_losses = 0.0, 0, []
    optimizer.zero_grad(set_to_none=True)
    t0 = time.time()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        last_micro = (i + 1) % accum_steps == 0 or i + 1 == n_batches
        # skip the DDP all-reduce on micro-steps that only accumulate
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            if cudagraphs and i % accum_steps == 0:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(device, amp_dtype):
                loss = loss_fn(model(x), y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {state.epoch}, "
                                         f"update {state.update}; lower optim.lr or check the data")
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        micro_losses.append(loss.item())
        if bar is not None:
            bar.update(1)
        if not last_micro:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.update += 1
        if ema is not None:
            ema.update(model.module if hasattr(model, "module") else model, step=state.update)
        lr = optimizer.param_groups[0]["lr"]
        step_loss = sum(micro_losses) / len(micro_losses)
        loss_sum += sum(micro_losses)
        loss_n += len(micro_losses)
        micro_losses = []
        state.step_log.append({"epoch": state.epoch, "step": state.update, "loss": step_loss, "lr": lr})
        scheduler.step_update(num_updates=state.update)
        if state.update % log_every == 0 and logger is not None:
            logger.scalar("train/loss", step_loss, state.update)
            logger.scalar("train/lr", lr, state.update)
        if print_lines and state.update % log_every == 0:  # plain log lines where no bar is drawn
            print(f"epoch {state.epoch} batch {i + 1}/{n_batches} update {state.update}: loss {step_loss:.4f} "
                  f"lr {lr:.2e} {(i + 1) * x.shape[0] / (time.time() - t0):.0f} img/s per rank", flush=True)
        if bar is not None:
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}",
                            img_s=f"{(i + 1) * x.shape[0] / (time.time() - t0):.0f}")
    if bar is not None:
        bar.close()
    return loss_sum / max(1, loss_n)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
             progress: bool = False, desc: str = "eval") -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over every sample of ``loader``, summed over
    ranks. Run it on the unwrapped model: ranks may hold different numbers of batches."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    it = loader
    if progress:
        from tqdm import tqdm
        try:
            total = len(loader)
        except TypeError:
            total = None
        it = tqdm(loader, total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False)
    for x, y in it:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[-1])
        topk = logits.topk(k, dim=-1).indices
        hit = topk.eq(y[:, None])
        sums += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), hit[:, 0].sum().item(),
                              hit.any(dim=-1).sum().item(), y.numel()], dtype=torch.float64, device=device)
    all_reduce_sum(sums)
    loss, c1, c5, n = sums.tolist()
    if n == 0:
        raise RuntimeError("evaluation saw no samples: check the validation split and data.root")
    return {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "count": int(n)}
