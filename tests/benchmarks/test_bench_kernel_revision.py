"""benchmarks/bench_kernel_revision.py: another revision's kernels/ imported as a second package, both timed and
compared on the same inputs (a CPU run under TRITON_INTERPRET=1, in a subprocess: the interpreter is chosen when
the kernels are decorated)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_kernel_revision.py"


def run(args, tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT)] + args, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def copy_kernels(dst, edit=None):
    shutil.copytree(ROOT / "kernels", dst / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        p = dst / "kernels" / "gka_chunk.py"
        old, new = edit
        src = p.read_text()
        assert src.count(old) == 1
        p.write_text(src.replace(old, new))


def test_same_kernels_agree_bit_for_bit_and_another_revision_does_not(tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    copy_kernels(same)
    # a revision whose ridge is 1.5x larger: its outputs differ from this checkout's
    copy_kernels(other, ("lam = tl.maximum(ridge_ratio * fro, ridge_floor)\n\n    dir_tok",
                         "lam = tl.maximum(1.5 * ridge_ratio * fro, ridge_floor)\n\n    dir_tok"))
    rows = {}
    for name, base in (("same", same), ("other", other)):
        out = tmp_path / f"{name}.json"
        proc = run(["--base", str(base), "--shapes", "1,9,1,16", "--dtype", "fp32", "--rounds", "2",
                    "--json", str(out)], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "| 1,9,1,16 |" in proc.stdout
        rows[name] = json.loads(out.read_text())[0]
    same_row, other_row = rows["same"], rows["other"]
    assert set(same_row["rel_diff"]) == {"o", "dq", "dk", "dv", "dalpha", "dg", "dg_rev"}
    assert all(v == 0.0 for v in same_row["rel_diff"].values())
    assert other_row["rel_diff"]["o"] > 1e-3  # the forward read-out moved with the ridge
    for row in rows.values():
        assert len(row["rounds_ms"]["base"]) == len(row["rounds_ms"]["this"]) == 2
        assert row["ratio"]["fwd"] == pytest.approx(row["base_ms"]["fwd"] / row["this_ms"]["fwd"])


@pytest.mark.parametrize("args, message", [
    (["--base", "{tmp}"], "holds no kernels/__init__.py"),
    (["--base", str(ROOT)], "is this checkout"),
    (["--base-rev", "no-such-revision-xyz"], "git archive 'no-such-revision-xyz' failed"),
    (["--base", "{tmp}", "--shapes", "1,9,1"], "shape '1,9,1': expected B,T,H,D"),
    (["--base", "{tmp}", "--rounds", "0"], "--rounds 0: at least 1"),
    (["--base", "{tmp}", "--config", "chunk=3"], "GKAKernelConfig.chunk=3"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run(args, tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
