"""Bad user input ends train.py / eval.py with one line naming the problem and exit code 2, never a
traceback, and never runs code from a weights file. Through the real entry points (subprocess) for the
issue's cases, in-process for the rest."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import gka_vision  # noqa: F401
from gka_vision.engine.checkpoint import export_weights

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import eval as eval_script  # noqa: E402
import train as train_script  # noqa: E402

torch.set_num_threads(1)
NAME = "gka_tiny_patch16_224"
TINY = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, num_iter=3, backend="torch")
# the bundled config, made small; errors must come before any training
TRAIN = ["model.kwargs.embed_dim=32", "model.kwargs.depth=1", "model.kwargs.num_heads=2", "model.kwargs.num_iter=2",
         "sched.epochs=1", "progress=false", "data.num_workers=0"]


class Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("user_errors")
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=10, **TINY)
    pcfg = dict(model.pretrained_cfg, num_classes=10, input_size=(1, 28, 28), mean=(0.286,), std=(0.353,),
                crop_pct=1.0, interpolation="bilinear")
    weights = export_weights(model.state_dict(), d / "weights", model_name=NAME, pretrained_cfg=pcfg,
                             model_args=dict(TINY, num_classes=10))
    evil = d / "evil.pth"
    torch.save({"model": model.state_dict(), "extra": Payload()}, evil)
    (d / "empty").mkdir()
    return {"weights": str(weights), "evil": str(evil), "empty": str(d / "empty"), "dir": d}


def _run(script, args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


def _one_clear_line(rc, out, err, *words):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, out[-2000:], err[-4000:])
    assert "Traceback" not in err and len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "PAYLOAD RAN" not in out + err
    return lines[0]


@pytest.mark.parametrize("case", ["img_size", "no_info", "bad_kwarg", "unknown_split", "unsafe_resume",
                                  "unsafe_pretrained", "num_iter"])
def test_train_py_user_errors(case, files, tmp_path):
    args, words = {
        "img_size": (["data.img_size=30"], ["not divisible by the patch size"]),
        "no_info": ([f"data.root={files['empty']}"], ["_info.json", files["empty"]]),
        "bad_kwarg": (["model.kwargs.foo=1"], ["foo", NAME]),
        "unknown_split": (["data.val_split=bogus"], ["data.val_split", "bogus", "['test', 'train']"]),
        "unsafe_resume": ([f"checkpoint.resume={files['evil']}"], ["refusing to load", "evil.pth"]),
        "unsafe_pretrained": ([f"model.pretrained={files['evil']}"], ["refusing to load", "evil.pth"]),
        "num_iter": (["model.kwargs.num_iter=0"], ["num_iter must be >= 1"]),
    }[case]
    line = _one_clear_line(*_run("train.py", [*TRAIN, f"output={tmp_path / 'out'}", *args], tmp_path), *words)
    assert line.startswith("train.py: ")
    assert not (tmp_path / "out" / "weights").exists()


@pytest.mark.parametrize("case", ["img_size", "no_info", "bad_kwarg", "unknown_split", "unsafe_weights"])
def test_eval_py_user_errors(case, files, tmp_path):
    args, words = {
        "img_size": (["--img-size", "30"], ["not divisible by the patch size"]),
        "no_info": (["--data", files["empty"]], ["_info.json", files["empty"]]),
        "bad_kwarg": (["--model-kwargs", "foo=1"], ["foo", NAME]),
        "unknown_split": (["--split", "bogus"], ["bogus", "['test', 'train']"]),
        "unsafe_weights": (["--weights", files["evil"], "--model", NAME], ["refusing to load", "evil.pth"]),
    }[case]
    base = ["--weights", files["weights"], "--workers", "0", "--no-bench", "--no-flops"]
    line = _one_clear_line(*_run("eval.py", [*base, *args], tmp_path), *words)
    assert line.startswith("eval.py: ")


def _in_process(main, args, capsys, *words):
    rc = main(args)
    out, err = capsys.readouterr()
    return _one_clear_line(rc, out, err, *words)


@pytest.mark.parametrize("args, words", [
    (["eval_every=0"], ["eval_every must be >= 1"]),
    (["optim.lr=-0.1"], ["optim.lr must be > 0"]),
    (["data.num_workers=-1"], ["data.num_workers must be >= 0"]),
    (["stop_after_epoch=-1"], ["stop_after_epoch must be >= 0"]),
    (["model.kwargs.ridge_ratio=0"], ["ridge_ratio must be > 0"]),
    (["model.kwargs.ridge_ratio=-0.5"], ["ridge_ratio must be > 0"]),
    (["data.train_split=bogus"], ["data.train_split", "bogus"]),
    (["checkpoint.resume=/no/such/last.pth"], ["/no/such/last.pth", "does not exist"]),
    (["model.pretrained=/no/such/w.safetensors"], ["/no/such/w.safetensors", "does not exist"]),
    (["model.compile=true", "model.compile_mode=fast"], ["model.compile_mode must be", "reduce-overhead", "'fast'"]),
    (["model.compile_mode=reduce-overhead"], ["model.compile_mode=reduce-overhead needs model.compile=true"]),
])
def test_train_main_more_user_errors(args, words, tmp_path, capsys):
    _in_process(train_script.main, [*TRAIN, f"output={tmp_path / 'out'}", *args], capsys, *words)


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], ["--batch-size must be >= 1"]),
    (["--workers", "-1"], ["--workers must be >= 0"]),
    (["--bench-iters", "0"], ["--bench-iters must be >= 1"]),
    (["--crop-pct", "0"], ["--crop-pct"]),
    (["--model-kwargs", "foo"], ["key=value"]),
    (["--model-kwargs", "num_iter=0"], ["num_iter must be >= 1"]),
    (["--model-kwargs", "ridge_ratio=0"], ["ridge_ratio must be > 0"]),
])
def test_eval_main_more_user_errors(args, words, files, capsys):
    base = ["--weights", files["weights"], "--workers", "0", "--no-bench", "--no-flops"]
    _in_process(eval_script.main, [*base, *args], capsys, *words)


def test_eval_split_must_name_a_subfolder_of_an_imagefolder_root(files, tmp_path, capsys):
    """On an ImageFolder tree, --split names a sub-folder; an absent one is an error, not the whole root."""
    root = tmp_path / "tree"
    for c in ("a", "b"):
        (root / "val" / c).mkdir(parents=True)
    _in_process(eval_script.main, ["--weights", files["weights"], "--data", str(root), "--split", "valid",
                                   "--workers", "0", "--no-bench", "--no-flops"], capsys, "valid", str(root))


@pytest.mark.parametrize("name, kw", [
    (NAME, dict(TINY)),
    ("gkavision_tiny", dict(num_classes=10)),
])
@pytest.mark.parametrize("bad, words", [
    (dict(num_iter=0), "num_iter must be >= 1"),
    (dict(num_iter=-3), "num_iter must be >= 1"),
    (dict(ridge_ratio=0.0), "ridge_ratio must be > 0"),
    (dict(ridge_ratio=-0.02), "ridge_ratio must be > 0"),
    (dict(ridge_ratio=float("nan")), "ridge_ratio must be > 0"),
])
def test_gka_mixers_validate_solver_options(name, kw, bad, words):
    with torch.device("meta"):
        with pytest.raises(ValueError, match=words):
            timm.create_model(name, **dict(kw, **bad))
