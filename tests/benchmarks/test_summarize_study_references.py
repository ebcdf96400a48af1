"""benchmarks/summarize_study.py with the reference models (deit_tiny, mambaout_femto): they are
compared with their group's GKA model when their runs are present, and the top-1 vs training img/s
plot gets one point per model with the mean and spread over seeds (synthetic run folders written
with the engine's own logger: tests/study_runs.py)."""
import json

import pytest

from benchmark_scripts import load_benchmark
from study_runs import fake_run, pair  # tests/study_runs.py

pytest.importorskip("matplotlib")
ss = load_benchmark("summarize_study")


def test_references_are_compared_and_plotted_against_speed(tmp_path):
    runs = tmp_path / "runs"
    pair(runs)  # gka_tiny 90/91/92, mamba_vim_tiny 85/86/87.5
    for s, t in enumerate([88.0, 88.5, 89.0]):
        fake_run(runs, "deit_tiny", "deit_tiny_patch16_224", s, [80.0, t])
    res = ss.summarize(runs, tmp_path / "out")
    pairs = {(p["a"]["tag"], p["b"]["tag"]): p for p in res["pairs"]}
    assert set(pairs) == {("gka_tiny", "mamba_vim_tiny"), ("gka_tiny", "deit_tiny")}  # no mambaout runs: no pair
    ref = pairs[("gka_tiny", "deit_tiny")]
    assert ref["winner"] == "gka_tiny" and ref["diff"] == pytest.approx(91.0 - 88.5)
    pts = {p["tag"]: p for p in res["speed_points"]}
    assert set(pts) == {"gka_tiny", "mamba_vim_tiny", "deit_tiny"}
    assert pts["deit_tiny"]["top1"] == pytest.approx(88.5) and pts["deit_tiny"]["top1_std"] == pytest.approx(0.5)
    assert pts["gka_tiny"]["img_per_s"] == pytest.approx(512 * 2 / 20.0)  # fake runs: 512 images/epoch, 10 s/epoch
    png = tmp_path / "out" / "study_top1_vs_speed.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "study.md").read_text()
    assert "## Top-1 against training speed" in md and "| deit_tiny (`deit_tiny_patch16_224`) |" in md
    assert "88.50 ± 0.50" in md and "## gka_tiny vs deit_tiny" in md
    assert json.loads((tmp_path / "out" / "study.json").read_text())["speed_points"]


def test_speed_points_skip_models_without_numbers(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "mambaout_femto", "mambaout_femto", 0, [70.0], rc=1, finished=False)
    pts = ss.speed_points(ss.find_runs(runs))
    assert [p["tag"] for p in pts] == ["mambaout_femto"] and pts[0]["seeds"] == 1
    assert ss.plot_top1_vs_speed(tmp_path / "p.png", []) == [] and (tmp_path / "p.png").exists()
