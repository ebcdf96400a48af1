"""Packaging hygiene: building the package (what `pip install -e .` and `pip install .` run) emits no
setuptools warning, and the wheel carries the bundled Fashion-MNIST sample."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs setuptools' PEP 517 hooks the way pip does (pip shows every warning they emit), records the warnings.
_BUILD = r"""
import json, sys, warnings
from setuptools import build_meta
hook = getattr(build_meta, sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    name = hook(sys.argv[2])
print(json.dumps({"wheel": name, "warnings": [[type(w.message).__name__, str(w.message).strip().splitlines()[0]]
                                               for w in caught]}))
"""


def _build(hook, out):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)")
    src = out / "src"  # a copy, so that the build leaves nothing (build/, *.egg-info) in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for d in ("gka_vision", "kernels"):
        shutil.copytree(REPO / d, src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    r = subprocess.run([sys.executable, "-c", _BUILD, hook, str(out)], cwd=src, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_editable_build_has_no_setuptools_warnings(tmp_path):
    res = _build("build_editable", tmp_path)
    # setuptools always adds one InformationOnly note to editable installs whose packages do not all sit in
    # one source root (gka_kernels lives in kernels/): "Editable installation." -- not a warning about us
    warned = [w for w in res["warnings"] if w[0] != "InformationOnly"]
    assert warned == [], warned


@pytest.mark.timeout(300)
def test_wheel_has_no_warnings_and_carries_the_bundled_data(tmp_path):
    res = _build("build_wheel", tmp_path)
    assert res["warnings"] == [], res["warnings"]
    names = zipfile.ZipFile(tmp_path / res["wheel"]).namelist()
    bundled = [n for n in names if n.startswith("gka_vision/data/bundled/")]
    info = json.loads((REPO / "gka_vision" / "data" / "bundled" / "_info.json").read_text())
    shards = [f for s in info["splits"].values() for f in s["filenames"]]
    assert {f"gka_vision/data/bundled/{f}" for f in shards + ["_info.json", "class_index.json"]} <= set(bundled)
    assert "gka_kernels/__init__.py" in names
    meta = [n for n in names if n.endswith("METADATA")][0]
    text = zipfile.ZipFile(tmp_path / res["wheel"]).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
