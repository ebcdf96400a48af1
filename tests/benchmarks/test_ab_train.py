"""benchmarks/ab_train.py: interleaved rounds, the summary's arithmetic, a smoke run and its argument errors."""
import json

import pytest

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py


def test_rounds_rotate_the_order_so_every_row_leads_in_turn():
    ab = load_benchmark("ab_train")
    rows = ["a", "b", "c"]
    assert [ab.rotation(rows, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                        ["a", "b", "c"]]


def test_summary_is_the_median_over_rounds_with_its_spread_and_ratio():
    ab = load_benchmark("ab_train")
    lines = ab.summarize({"ref": [0.5, 0.4, 0.25], "new": [0.2, 0.25, 1.0]}, batch=10, reference="ref")
    ref, new = lines
    assert ref["row"] == "ref" and ref["img_s"] == pytest.approx(25.0) and ref["ratio"] == pytest.approx(1.0)
    assert (ref["min_img_s"], ref["max_img_s"]) == pytest.approx((20.0, 40.0))
    assert new["img_s"] == pytest.approx(40.0) and new["ratio"] == pytest.approx(1.6)   # one slow round is ignored
    assert (new["min_img_s"], new["max_img_s"], new["rounds"]) == pytest.approx((10.0, 50.0, 3))


def test_smoke_run_times_every_row_in_every_round(tmp_path):
    ab = load_benchmark("ab_train")
    out = tmp_path / "ab.json"
    result = ab.main(["--smoke", "--device", "cpu", "--json", str(out)])
    saved = json.loads(out.read_text())
    rows = ab.SMOKE_ROWS
    assert saved["order"] == [rows, rows[::-1]]
    assert all(len(saved["step_s"][r]) == 2 and min(saved["step_s"][r]) > 0 for r in rows)
    assert [line["row"] for line in result["summary"]] == rows and result["summary"][0]["ratio"] == 1.0
    assert saved["scans"] == {r: "gka_scan:torch" for r in rows}
    assert saved["environment"]["command"].startswith("python benchmarks/ab_train.py --smoke")


@pytest.mark.parametrize("argv, message", [(["--models", "gka_tiny_patch16_224@nosuch"], "unknown model or variant"),
                                           (["--models", "deit_tiny_patch16_224", "deit_tiny_patch16_224"], "twice"),
                                           (["--models", "deit_tiny_patch16_224", "--rounds", "0"], "positive"),
                                           ([], "name at least one row")])
def test_bad_arguments_are_user_errors(argv, message, capsys):
    ab = load_benchmark("ab_train")
    with pytest.raises(SystemExit) as err:
        ab.main(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err
