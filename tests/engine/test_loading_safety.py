"""No code runs from a weights file: a pickle payload with a side effect (it creates a marker file when
unpickled) loaded through every documented path -- timm's `pretrained_cfg_overlay=dict(file=...)`, timm's
`local-dir:` with a pytorch_model.bin, train.py's model.pretrained and eval.py --weights -- is refused with a
clear error, and the marker never appears. With timm < 1.0.26 the two timm calls ran it (pyproject's floor)."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import gka_vision  # noqa: F401  (registers the models)
from gka_vision.engine.checkpoint import UnsafeCheckpointError

REPO = Path(__file__).resolve().parents[2]
NAME = "gka_tiny_patch16_224"
TINY = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, num_iter=3, backend="torch",
            num_classes=10)


class Payload:
    """Unpickling this calls open(marker, 'w'): the file appears iff the payload ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    """A checkpoint with valid weights plus the payload, as a .pth and as a local-dir folder."""
    marker = tmp_path / "PAYLOAD_RAN"
    sd = timm.create_model(NAME, **TINY).state_dict()
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": sd, "extra": Payload(marker)}, path)
    folder = tmp_path / "hub"
    folder.mkdir()
    torch.save({**sd, "extra": Payload(marker)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "architecture": NAME, "num_classes": 10, "model_args": TINY,
        "pretrained_cfg": {"num_classes": 10, "input_size": [1, 28, 28], "first_conv": "patch_embed.proj",
                           "classifier": "head"}}))
    # the payload is real: a plain unpickling (what torch.load(weights_only=False) does) creates the marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(control))).close()
    assert control.exists()
    return path, folder, marker


def _refused(excinfo):
    return "weights_only" in str(excinfo.value) or "Weights only load failed" in str(excinfo.value)


def test_timm_file_overlay_refuses_the_payload(evil):
    path, _, marker = evil
    with pytest.raises((RuntimeError, pickle.UnpicklingError)) as e:
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    assert _refused(e), str(e.value)
    assert not marker.exists()


def test_timm_local_dir_refuses_the_payload(evil):
    _, folder, marker = evil
    with pytest.raises((RuntimeError, pickle.UnpicklingError)) as e:
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert _refused(e), str(e.value)
    assert not marker.exists()


def test_fine_tuning_refuses_the_payload(evil):
    from gka_vision.engine.model import create_model, pretrained_model_kwargs
    path, _, marker = evil
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*pickled Python objects"):
        pretrained_model_kwargs(NAME, dict(TINY), str(path))
    with pytest.raises(UnsafeCheckpointError):
        create_model(NAME, dict(TINY), str(path))
    assert not marker.exists()


def test_eval_py_refuses_the_payload_in_one_line(evil, capsys):
    sys.path.insert(0, str(REPO))
    import eval as eval_script
    path, folder, marker = evil
    for weights in (path, folder / "pytorch_model.bin"):
        assert eval_script.main(["--model", NAME, "--weights", str(weights), "--no-accuracy", "--no-flops",
                                 "--no-bench"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("eval.py: refusing to load") and "pickled Python objects" in err
        assert len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_train_py_refuses_the_payload(evil, tmp_path):
    path, _, marker = evil
    r = subprocess.run([sys.executable, str(REPO / "train.py"), f"model.pretrained={path}", f"output={tmp_path / 'o'}",
                        "sched.epochs=1"], capture_output=True, text=True, cwd=str(REPO), timeout=110)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warnings.warn" not in ln]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "refusing to load" in lines[0] and "pickled Python objects" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "o" / "last.pth").exists()
