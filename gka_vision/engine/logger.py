"""Run logs on rank 0: steps.csv and epochs.csv, TensorBoard scalars, and a PNG of the curves."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional

STEP_FIELDS = ["epoch", "step", "loss", "lr"]
EPOCH_FIELDS = ["epoch", "step", "train_loss", "val_loss", "val_top1", "val_top5",
                "ema_top1", "lr", "epoch_time_s", "skipped_samples"]


class RunLogger:
    def __init__(self, out_dir: str, enabled: bool = True, start_epoch: int = 0, tensorboard: bool = True):
        self.out = Path(out_dir)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        # a resumed run drops rows from epochs it is about to redo, so the curve stays continuous
        for name, fields in (("steps.csv", STEP_FIELDS), ("epochs.csv", EPOCH_FIELDS)):
            rows = [r for r in read_csv(self.out / name) if int(r["epoch"]) < start_epoch]
            with open(self.out / name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=None)
            except ImportError:  # tensorboard is optional at run time
                self.tb = None

    def log_steps(self, rows: List[Dict]) -> None:
        if not self.enabled or not rows:
            return
        with open(self.out / "steps.csv", "a", newline="") as f:
            csv.DictWriter(f, fieldnames=STEP_FIELDS).writerows(rows)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    def log_epoch(self, row: Dict) -> None:
        if not self.enabled:
            return
        with open(self.out / "epochs.csv", "a", newline="") as f:
            csv.DictWriter(f, fieldnames=EPOCH_FIELDS).writerow({k: row.get(k, "") for k in EPOCH_FIELDS})
        for k, v in row.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                self.scalar(f"epoch/{k}", v, row["epoch"])
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_csv(path) -> List[Dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(out_dir: str, path: Optional[str] = None) -> Optional[str]:
    """curves.png: training loss per step (raw and smoothed), validation top-1 and loss per epoch, lr."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out_dir)
    steps, epochs = read_csv(out / "steps.csv"), read_csv(out / "epochs.csv")
    if not steps:
        return None
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    s = [int(r["step"]) for r in steps]
    loss = [float(r["loss"]) for r in steps]
    k = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
    ax[0].plot(s, loss, alpha=0.3, label="train loss")
    ax[0].plot(s, smooth, label=f"train loss (mean of {k})")
    if epochs:
        e_step = [int(r["step"]) for r in epochs if r["val_loss"]]
        ax[0].plot(e_step, [float(r["val_loss"]) for r in epochs if r["val_loss"]], "o-", label="val loss")
        ep = [int(r["epoch"]) + 1 for r in epochs if r["val_top1"]]
        ax[1].plot(ep, [float(r["val_top1"]) for r in epochs if r["val_top1"]], "o-", label="val top-1")
        if any(r["ema_top1"] for r in epochs):
            ax[1].plot(ep, [float(r["ema_top1"]) if r["ema_top1"] else float("nan") for r in epochs if r["val_top1"]],
                       "s--", label="EMA top-1")
    ax[0].set_xlabel("step"), ax[0].legend(), ax[0].set_title("loss")
    ax[1].set_xlabel("epoch"), ax[1].set_ylabel("%"), ax[1].legend(), ax[1].set_title("validation accuracy")
    ax[2].plot(s, [float(r["lr"]) for r in steps])
    ax[2].set_xlabel("step"), ax[2].set_title("learning rate")
    fig.tight_layout()
    path = path or str(out / "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
