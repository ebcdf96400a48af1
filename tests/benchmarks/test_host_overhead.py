"""benchmarks/host_overhead.py: the per-call host time of every layer of a GKA scan call (CPU mode, kernels stubbed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "host_overhead.py"


def _run(*args):
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cpu_rows_for_every_layer(tmp_path, bidirectional):
    out = tmp_path / "host.json"
    proc = _run("--device", "cpu", "--iters", "20", "--shape", "1,33,2,40", "--json", str(out),
                *(["--bidirectional"] if bidirectional else []))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["stub_kernels"] is True and res["bidirectional"] is bidirectional and res["shape"] == [1, 33, 2, 40]
    assert list(res["rows"]) == ["op fwd", "op bwd", "scan fwd+bwd", "op fwd+bwd", "function fwd+bwd", "launch fwd",
                                 "launch bwd", "torch.empty"]
    for name, (host, wall) in res["rows"].items():
        assert 0 < host <= wall, (name, host, wall)  # the best round's host time is within some round's wall
    # each layer adds to the one below it: the custom op's forward costs more than its launch code alone
    assert res["rows"]["op fwd"][0] > res["rows"]["launch fwd"][0]
    assert "| scan fwd+bwd |" in proc.stdout


def test_bad_arguments_exit_2():
    for args in (["--shape", "1,2,3"], ["--shape", "a,b,c,d"], ["--iters", "2"], ["--device", "gpu"]):
        proc = _run(*args)
        assert proc.returncode == 2 and "error" in proc.stderr, (args, proc.stderr[-500:])
