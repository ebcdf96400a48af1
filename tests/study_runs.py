"""Run folders of the Fashion-MNIST accuracy study as train.py and scripts/gpu_fmnist_study.sh leave them,
written with the engine's own RunLogger, for the tests of benchmarks/summarize_study.py."""
import json
from pathlib import Path

from gka_vision.engine.logger import RunLogger


def fake_run(root, tag, model, seed, top1, *, scheduled=None, rc=0, nan_at=None, steps_per_epoch=4,
             n_train=512, finished=True):
    """A run folder as train.py + the study script leave it: epochs.csv / steps.csv through the engine's
    RunLogger, summary.json with the engine's keys, config.yaml, train.log, run_meta.json."""
    d = Path(root) / f"{tag}_s{seed}"
    lg = RunLogger(str(d), tensorboard=False)
    scheduled = scheduled or len(top1)
    step = 0
    for e, acc in enumerate(top1):
        rows = []
        for _ in range(steps_per_epoch):
            step += 1
            loss = float("nan") if nan_at == step else 2.0 / (step + 1)
            rows.append({"epoch": e, "step": step, "loss": loss, "lr": 1e-3})
        lg.log_steps(rows)
        lg.log_epoch({"epoch": e, "step": step, "train_loss": 2.0 / (e + 2), "val_loss": 1.0 / (e + 2),
                      "val_top1": acc, "val_top5": 99.0, "ema_top1": acc - 1, "lr": 1e-3,
                      "epoch_time_s": 10.0, "skipped_samples": 0})
    lg.close()
    (d / "config.yaml").write_text(f"model:\n  name: {model}\n  kwargs:\n    backend: auto\ndata:\n  batch_size: 128\n"
                                   f"sched:\n  epochs: {scheduled}\n  warmup_epochs: 1\nseed: {seed}\n")
    log = f"data /tmp/s: {n_train} train samples, 4 batches of 128 per rank x 1 ranks; 4 updates/epoch; " \
          f"lr 0.002 (global batch 128); amp torch.bfloat16\n"
    if nan_at is not None:
        log += "FloatingPointError: training loss is nan at epoch 0, update 3; lower optim.lr or check the data\n"
    (d / "train.log").write_text(log)
    if finished:
        (d / "summary.json").write_text(json.dumps({
            "model": model, "params": 1000, "epochs_done": len(top1), "updates": step, "best_top1": max(top1),
            "final": {"loss": 0.3, "top1": top1[-1], "top5": 99.0, "count": 10000}, "final_ema": {},
            "train_time_s": 100.0 + seed, "world_size": 1, "rank": 0, "device": "cuda:0"}))
    (d / "run_meta.json").write_text(json.dumps({"tag": tag, "seed": seed, "gpu": str(seed % 2), "rc": rc,
                                                 "wall_s": 120.0, "epochs": scheduled}))
    return d


def pair(root, b_top1=((85.0,), (86.0,), (87.5,)), kw_b=None):
    """Three seeds of gka_tiny (top-1 90, 91, 92) and of mamba_vim_tiny (``b_top1``, default 85, 86, 87.5),
    two epochs each; ``kw_b`` maps a mamba_vim_tiny seed to extra fake_run arguments."""
    for s, t in enumerate([90.0, 91.0, 92.0]):
        fake_run(root, "gka_tiny", "gka_tiny_patch16_224", s, [80.0, t])
    for s, t in enumerate(b_top1):
        fake_run(root, "mamba_vim_tiny", "mamba_vim_tiny_patch16_224", s, [79.0, *t], **(kw_b or {}).get(s, {}))
