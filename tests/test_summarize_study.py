"""benchmarks/summarize_study.py (the Fashion-MNIST accuracy study of issue 5): the per-pair numbers
(mean / std of top-1, winner, whether the gap exceeds the seed spread), the unequal-budget flag, the
non-finite-loss flag, the plot and the tarball input; run folders are written with the engine's own
RunLogger, and one real tiny CPU training run checks that the parser reads what train.py writes."""
import json
import math
import tarfile
from pathlib import Path

import pytest

from gka_vision.engine.logger import EPOCH_FIELDS, STEP_FIELDS, RunLogger, read_csv

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py

pytest.importorskip("matplotlib")
ss = load_benchmark("summarize_study")


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


def _pair(root, b_top1=((85.0,), (86.0,), (87.5,)), kw_b=None):
    for s, t in enumerate([90.0, 91.0, 92.0]):
        fake_run(root, "gka_tiny", "gka_tiny_patch16_224", s, [80.0, t])
    for s, t in enumerate(b_top1):
        fake_run(root, "mamba_vim_tiny", "mamba_vim_tiny_patch16_224", s, [79.0, *t], **(kw_b or {}).get(s, {}))


def test_pair_numbers_winner_and_outputs(tmp_path):
    _pair(tmp_path / "runs")
    res = ss.summarize(tmp_path / "runs", tmp_path / "out", env={"hardware": "2 x NVIDIA H200", "torch": "2.11"},
                       command="bash scripts/gpu_fmnist_study.sh")
    p = res["pairs"][0]
    assert p["a"]["top1"]["mean"] == pytest.approx(91.0) and p["a"]["top1"]["std"] == pytest.approx(1.0)
    assert p["b"]["top1"]["mean"] == pytest.approx(86.1666667)
    assert p["b"]["top1"]["std"] == pytest.approx(math.sqrt(((85 - 86.1666667) ** 2 + (86 - 86.1666667) ** 2
                                                              + (87.5 - 86.1666667) ** 2) / 2))
    assert p["a"]["best_top1"]["mean"] == pytest.approx(91.0) and p["a"]["epochs_done"] == [2]
    assert p["a"]["img_per_s"]["mean"] == pytest.approx(512 * 2 / 20.0)  # 512 images/epoch, 10 s/epoch
    assert p["a"]["train_time_s"]["mean"] == pytest.approx(101.0)
    assert p["equal_budget"] and p["problems"] == []
    assert p["winner"] == "gka_tiny" and p["diff"] == pytest.approx(4.8333333)
    assert p["ranges_separated"] and p["exceeds_spread"]
    assert all(r["finite"] and r["status"] == "completed" and r["amp"] == "torch.bfloat16" for r in res["runs"])
    md = (tmp_path / "out" / "study.md").read_text()
    assert "91.00 ± 1.00" in md and "gka_tiny wins" in md and "exceeds the seed spread" in md
    assert "bash scripts/gpu_fmnist_study.sh" in md and "2 x NVIDIA H200" in md
    assert "Equal budget: yes" in md
    png = tmp_path / "out" / "study_curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "study.json").read_text())["pairs"][0]["winner"] == "gka_tiny"


def test_overlapping_seeds_do_not_exceed_spread(tmp_path):
    _pair(tmp_path / "runs", b_top1=((89.0,), (91.5,), (93.0,)))
    p = ss.summarize(tmp_path / "runs", tmp_path / "out")["pairs"][0]
    assert not p["exceeds_spread"] and not p["ranges_separated"]
    assert "does NOT clearly exceed the seed spread" in p["verdict"]


def test_unequal_epochs_are_flagged(tmp_path):
    # seed 2 of the baseline was stopped by the time limit after 1 of 2 epochs
    _pair(tmp_path / "runs", b_top1=((85.0,), (86.0,), ()), kw_b={2: {"scheduled": 2}})
    d = tmp_path / "runs" / "mamba_vim_tiny_s2"
    (d / "train.log").write_text((d / "train.log").read_text() + "stopping after epoch 0: time_limit_min=5\n")
    res = ss.summarize(tmp_path / "runs", tmp_path / "out")
    p = res["pairs"][0]
    assert not p["equal_budget"]
    assert any("different numbers of epochs" in x and "NOT equal" in x for x in p["problems"])
    assert {r["status"] for r in res["runs"] if r["dir"].endswith("mamba_vim_tiny_s2")} == {"stopped by time_limit_min"}
    md = (tmp_path / "out" / "study.md").read_text()
    assert "**Equal budget: NO.**" in md and "the budget was NOT equal" in md


def test_nonfinite_loss_and_crash_are_flagged(tmp_path):
    _pair(tmp_path / "runs", kw_b={1: {"nan_at": 3, "rc": 1, "finished": False}})
    res = ss.summarize(tmp_path / "runs", tmp_path / "out")
    bad = [r for r in res["runs"] if r["dir"].endswith("mamba_vim_tiny_s1")][0]
    assert not bad["finite"] and bad["nonfinite_steps"] == 1 and bad["nonfinite_error"]
    assert bad["status"] == "non-finite loss (FloatingPointError)"
    assert sum(not r["finite"] for r in res["runs"]) == 1
    p = res["pairs"][0]
    assert p["b"]["all_finite"] is False and p["a"]["all_finite"] is True and not p["equal_budget"]
    assert "**NO**" in (tmp_path / "out" / "study.md").read_text()


def test_reads_the_tarball(tmp_path):
    _pair(tmp_path / "study" / "runs")
    (tmp_path / "study" / "runs" / "env.json").write_text(json.dumps({"hardware": "test-box", "date_utc": "2026-11-28"}))
    with tarfile.open(tmp_path / "study_runs.tar.gz", "w:gz") as t:
        t.add(tmp_path / "study" / "runs", arcname="runs")
    assert ss.main(["--tar", str(tmp_path / "study_runs.tar.gz"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "study.md").read_text()
    assert "test-box" in md and "2026-11-28" in md and "gka_tiny wins" in md


def test_parser_reads_a_real_train_run(tmp_path):
    """The fake folders above match the engine's format: one real (tiny, CPU) train.py run through the parser."""
    from test_train import tiny_cfg  # the tiny-model config of the training tests
    from gka_vision.engine.trainer import run
    import io
    from contextlib import redirect_stdout
    root = _make_tiny_data(tmp_path)
    out = tmp_path / "runs" / "gka_tiny_s0"
    buf = io.StringIO()
    with redirect_stdout(buf):
        summary = run(tiny_cfg(root, out, "sched.epochs=1", "checkpoint.export=false"))
    (out / "train.log").write_text(buf.getvalue())
    assert list(read_csv(out / "epochs.csv")[0]) == EPOCH_FIELDS and list(read_csv(out / "steps.csv")[0]) == STEP_FIELDS
    r = ss.load_run(out)
    assert r["model"] == "gka_tiny_patch16_224" and r["seed"] == 0 and r["tag"] == "gka_tiny_patch16_224"
    assert r["epochs_done"] == r["epochs_scheduled"] == 1 and r["status"] == "completed"
    assert r["final_top1"] == pytest.approx(summary["final"]["top1"]) and r["val_count"] == 100
    assert r["train_time_s"] == summary["train_time_s"] and r["params"] == summary["params"]
    assert r["n_train"] == 200 and r["img_per_s"] > 0 and r["steps_logged"] == 10
    assert r["finite"] and r["amp"] == "None"


def _make_tiny_data(tmp_path):
    from gka_vision.data.shards import FASHION_MNIST_CLASSES, Sample, _update_info, _write_shard
    from test_data_shards import bundled_samples
    d = tmp_path / "data"
    d.mkdir()
    for split, n in (("train", 200), ("test", 100)):
        samples = [Sample(f"{split}{i:04d}", b, "png", y) for i, (b, y) in enumerate(bundled_samples(split, n))]
        _write_shard(d / f"{split}-000000.tar", samples)
        _update_info(d, split, {"name": split, "num_samples": n, "filenames": [f"{split}-000000.tar"],
                                "shard_lengths": [n]}, FASHION_MNIST_CLASSES)
    return d
