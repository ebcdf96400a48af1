"""benchmarks/summarize_study.py (the Fashion-MNIST accuracy study of issue 5): the per-pair numbers
(mean / std of top-1, winner, whether the gap exceeds the seed spread), the unequal-budget flag, the
non-finite-loss flag, the plot and the tarball input; run folders are written with the engine's own
RunLogger, and one real tiny CPU training run checks that the parser reads what train.py writes."""
import json
import math
import tarfile

import pytest

from gka_vision.engine.logger import EPOCH_FIELDS, STEP_FIELDS, read_csv

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py
from fashion_mnist import tiny_cfg, write_shard_folder  # tests/fashion_mnist.py
from study_runs import pair  # tests/study_runs.py

pytest.importorskip("matplotlib")
ss = load_benchmark("summarize_study")


def test_pair_numbers_winner_and_outputs(tmp_path):
    pair(tmp_path / "runs")
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
    pair(tmp_path / "runs", b_top1=((89.0,), (91.5,), (93.0,)))
    p = ss.summarize(tmp_path / "runs", tmp_path / "out")["pairs"][0]
    assert not p["exceeds_spread"] and not p["ranges_separated"]
    assert "does NOT clearly exceed the seed spread" in p["verdict"]


def test_unequal_epochs_are_flagged(tmp_path):
    # seed 2 of the baseline was stopped by the time limit after 1 of 2 epochs
    pair(tmp_path / "runs", b_top1=((85.0,), (86.0,), ()), kw_b={2: {"scheduled": 2}})
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
    pair(tmp_path / "runs", kw_b={1: {"nan_at": 3, "rc": 1, "finished": False}})
    res = ss.summarize(tmp_path / "runs", tmp_path / "out")
    bad = [r for r in res["runs"] if r["dir"].endswith("mamba_vim_tiny_s1")][0]
    assert not bad["finite"] and bad["nonfinite_steps"] == 1 and bad["nonfinite_error"]
    assert bad["status"] == "non-finite loss (FloatingPointError)"
    assert sum(not r["finite"] for r in res["runs"]) == 1
    p = res["pairs"][0]
    assert p["b"]["all_finite"] is False and p["a"]["all_finite"] is True and not p["equal_budget"]
    assert "**NO**" in (tmp_path / "out" / "study.md").read_text()


def test_a_model_without_runs_is_not_called_non_finite(tmp_path):
    """A study of one model (STUDY_MODELS=gka_tiny) lists its pair's other model without runs: its finite column
    says it did not run, not that a loss was non-finite."""
    from study_runs import fake_run
    for s, t in enumerate([90.0, 91.0, 92.0]):
        fake_run(tmp_path / "runs", "gka_tiny", "gka_tiny_patch16_224", s, [80.0, t])
    res = ss.summarize(tmp_path / "runs", tmp_path / "out")
    p = res["pairs"][0]
    assert p["b"]["all_finite"] is None and p["a"]["all_finite"] is True
    md = (tmp_path / "out" / "study.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| mamba_vim_tiny (")]
    assert rows and rows[0].endswith("| n/a (no run) |") and "**NO**" not in rows[0]


def test_reads_the_tarball(tmp_path):
    pair(tmp_path / "study" / "runs")
    (tmp_path / "study" / "runs" / "env.json").write_text(json.dumps({"hardware": "test-box", "date_utc": "2026-11-28"}))
    with tarfile.open(tmp_path / "study_runs.tar.gz", "w:gz") as t:
        t.add(tmp_path / "study" / "runs", arcname="runs")
    assert ss.main(["--tar", str(tmp_path / "study_runs.tar.gz"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "study.md").read_text()
    assert "test-box" in md and "2026-11-28" in md and "gka_tiny wins" in md


def test_parser_reads_a_real_train_run(tmp_path):
    """The fake folders above match the engine's format: one real (tiny, CPU) train.py run through the parser."""
    from gka_vision.engine.trainer import run
    import io
    from contextlib import redirect_stdout
    root = write_shard_folder(tmp_path / "data", {"train": [200], "test": [100]})
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
