"""Training: an end-to-end run with all its outputs, resume reproducing the uninterrupted curve,
and two-process DDP on CPU (gloo) with uneven shards."""
import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gka_vision.engine.trainer import run

from fashion_mnist import BUNDLED_CONFIG, REPO, TINY_MODEL, tiny_cfg  # tests/fashion_mnist.py
from ranks import free_port, spawn_or_fail  # tests/ranks.py

torch.set_num_threads(1)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    common = ["ema.enabled=true", "ema.decay=0.9", "aug.mixup=0.2", "aug.cutmix=0.5", "aug.smoothing=0.1",
              "aug.re_prob=0.25", "optim.accum_steps=2", "model.kwargs.kernel_config=num_warps=8"]
    full = run(tiny_cfg(tiny_data, tmp_path / "full", "verify_export=true", *common))
    # interrupted after epoch 0 (the time limit of a cluster job, say), then resumed from last.pth
    part = run(tiny_cfg(tiny_data, tmp_path / "resumed", "stop_after_epoch=0", *common))
    assert part["epochs_done"] == 1 and (tmp_path / "resumed" / "last.pth").exists()
    assert not (tmp_path / "resumed" / "weights").exists()  # unfinished runs export nothing
    resumed = run(tiny_cfg(tiny_data, tmp_path / "resumed", "checkpoint.resume=auto", *common))
    a = read_rows(tmp_path / "full" / "steps.csv")
    b = read_rows(tmp_path / "resumed" / "steps.csv")
    assert len(a) == len(b) == 2 * 5  # 10 batches of 20 per epoch, 2 micro-steps per update
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([float(r["loss"]) for r in b], [float(r["loss"]) for r in a], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([float(r["lr"]) for r in b], [float(r["lr"]) for r in a], rtol=1e-9)
    ea, eb = read_rows(tmp_path / "full" / "epochs.csv"), read_rows(tmp_path / "resumed" / "epochs.csv")
    assert [(r["val_top1"], r["ema_top1"]) for r in ea] == [(r["val_top1"], r["ema_top1"]) for r in eb]
    assert resumed["param_checksum"] == pytest.approx(full["param_checksum"], rel=1e-9)

    # the uninterrupted run's outputs
    out = tmp_path / "full"
    for f in ("config.yaml", "last.pth", "best.pth", "curves.png", "summary.json", "weights/model.safetensors",
              "weights/config.json", "weights/pretrained_cfg.json", "weights_ema/model.safetensors"):
        assert (out / f).exists(), f
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    # the kernels' tuning is the run's, not the architecture's: the exported model args leave it out
    exported = json.loads((out / "weights" / "config.json").read_text())
    assert exported["model_args"] and "kernel_config" not in exported["model_args"]
    summary = json.loads((out / "summary.json").read_text())
    # the exported weights, reloaded through timm's pretrained path, give the same accuracy
    assert summary["reloaded"]["top1"] == pytest.approx(summary["final"]["top1"], abs=1e-9)
    assert summary["final"]["count"] == 100


def _ddp_worker(rank, world, port, data_root, out, result_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_cfg(data_root, out, "sched.epochs=1", "checkpoint.export=false", "device=cpu")
    summary = run(cfg)
    # the data this rank trained on: its epoch-0 stream depends only on (seed, epoch, rank)
    from gka_vision.data.loader import build_train_loader
    _, ds = build_train_loader(cfg.data, cfg.aug, str(data_root), seed=cfg.seed)
    ds.set_epoch(0)
    torch.manual_seed(0)
    hashes = []
    ds.transform = lambda im: torch.from_numpy(np.array(im))  # identify images, not augmentations
    for x, _ in ds:
        hashes += [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x]
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"summary": summary, "hashes": hashes}))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_gloo(tiny_data, tmp_path):
    world = 2
    ctx = mp.start_processes(_ddp_worker, args=(world, free_port(), str(tiny_data), str(tmp_path / "ddp"),
                                                str(tmp_path)), nprocs=world, join=False, start_method="spawn")
    while not ctx.join(timeout=240):  # raises if a rank fails; a hang hits the pytest timeout
        pass
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    s0, s1 = res[0]["summary"], res[1]["summary"]
    assert s0["world_size"] == s1["world_size"] == 2 and s0["updates"] == s1["updates"] == 5  # ceil(200/(20*2))
    # DDP kept the replicas identical
    assert s0["param_checksum"] == pytest.approx(s1["param_checksum"], rel=1e-9)
    # validation counted every test image once across the two ranks (all_reduce of sums)
    assert s0["final"]["count"] == s1["final"]["count"] == 100 and s0["final"]["top1"] == s1["final"]["top1"]
    h0, h1 = res[0]["hashes"], res[1]["hashes"]
    assert len(h0) == len(h1) == 100
    overlap = set(h0) & set(h1)
    assert len(overlap) <= 20, f"ranks read {len(overlap)} common images"  # at most the 4th shard's spill-over
    rows = read_rows(tmp_path / "ddp" / "steps.csv")
    assert len(rows) == 5 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_non_finite_loss_stops_training_with_a_clear_error():
    """A NaN in the data (or a diverging run) raises FloatingPointError naming where it happened,
    before the optimizer step, so the weights are not overwritten with NaN."""
    import pytest
    import torch
    from gka_vision.engine.loop import TrainState, train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    good = (torch.randn(2, 4), torch.tensor([0, 1]))
    bad = (torch.full((2, 4), float("nan")), torch.tensor([0, 1]))

    class Loader(list):
        pass

    state = TrainState(epoch=3, update=7)
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 3, update 7"):
        train_one_epoch(model, Loader([bad, good]), opt, None, torch.nn.functional.cross_entropy, state,
                        device=torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by the failed step"


@pytest.mark.parametrize("cudagraphs, accum_steps, marks", [(False, 1, 0), (True, 1, 5), (True, 2, 3)])
def test_cudagraph_training_starts_a_graph_iteration_per_update(monkeypatch, cudagraphs, accum_steps, marks):
    """Under CUDA graphs (model.compile_mode=reduce-overhead or max-autotune) each update's first micro-step marks
    a new graph iteration, before its forward; the other micro-steps accumulate into that iteration's gradients
    and must not (5 batches: 5 updates, or 3 with two micro-steps each)."""
    from gka_vision.engine.loop import TrainState, train_one_epoch

    events = []
    model = torch.nn.Linear(4, 3)
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: events.append("forward") or forward(x))
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))

    class Sched:
        def step_update(self, num_updates):
            pass

    loader = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(5)]
    train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), Sched(),
                    torch.nn.functional.cross_entropy, TrainState(), device=torch.device("cpu"),
                    accum_steps=accum_steps, cudagraphs=cudagraphs)
    assert events.count("mark") == marks and events.count("forward") == 5
    firsts = [i for i in range(5) if i % accum_steps == 0] if cudagraphs else []
    forwards = [j for j, e in enumerate(events) if e == "forward"]
    assert [events[forwards[i] - 1] for i in firsts] == ["mark"] * len(firsts)


@pytest.mark.parametrize("compile_mode, expected", [("default", None), ("reduce-overhead", "reduce-overhead"),
                                                    ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs")])
def test_model_compile_mode_reaches_torch_compile(monkeypatch, compile_mode, expected):
    """model.compile=true compiles in model.compile_mode ("default" is torch.compile's own default, mode=None);
    the loop is told to mark CUDA-graph iterations exactly in the modes that record graphs."""
    from gka_vision.engine.config import load_config, uses_cudagraphs
    from gka_vision.engine.distributed import DistState
    from gka_vision.engine.trainer import wrap_model

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or model)
    cfg = load_config(str(BUNDLED_CONFIG), ["model.compile=true", f"model.compile_mode={compile_mode}"])
    wrap_model(torch.nn.Linear(2, 2), cfg, DistState())
    assert calls == [{"mode": expected}]
    assert uses_cudagraphs(cfg.model) == (compile_mode == "reduce-overhead")
    cfg.model.compile = False
    assert not uses_cudagraphs(cfg.model)


def test_resubmitted_time_limited_job_exports_nothing(tiny_data, tmp_path, capsys):
    """The same time-limited command submitted twice: the second run has nothing to train. It must not
    export the unfinished weights as final, nor print 'trained model: nan%', nor touch summary.json."""
    out = tmp_path / "job"
    args = ["sched.epochs=3", "stop_after_epoch=1", "checkpoint.resume=auto", "verify_export=true"]
    first = run(tiny_cfg(tiny_data, out, *args))
    assert first["status"] == "partial" and first["epochs_done"] == 2 and first["epochs_total"] == 3
    assert first["stopped_by"] == "stop_after_epoch" and first["final"]["count"] == 100
    assert "partial run: 2 of 3 epochs done" in capsys.readouterr().out
    saved = json.loads((out / "summary.json").read_text())
    assert saved["status"] == "partial" and saved["epochs_done"] == 2 and "weights" not in saved
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    again = run(tiny_cfg(tiny_data, out, *args))
    text = capsys.readouterr().out
    assert "stop_after_epoch=1 is already reached" in text and "nothing to train" in text
    assert "nan" not in text and "exported" not in text
    assert again["nothing_to_do"] and again["status"] == "partial" and again["epochs_done"] == 2
    assert not (out / "weights").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing rewritten

    # the run then continues to the end of its schedule and exports
    done = run(tiny_cfg(tiny_data, out, "sched.epochs=3", "checkpoint.resume=auto", "verify_export=true"))
    text = capsys.readouterr().out
    assert done["status"] == "finished" and done["epochs_done"] == 3 and done["epochs_this_run"] == 1
    assert (out / "weights" / "model.safetensors").exists() and "nan" not in text
    assert f"trained model: {done['final']['top1']:.2f}%" in text
    assert done["reloaded"]["top1"] == pytest.approx(done["final"]["top1"], abs=1e-9)


def test_rerunning_a_finished_run_says_so(tiny_data, tmp_path, capsys):
    """A finished run re-submitted with checkpoint.resume=auto (the ImageNet configs' default) reports
    that it is finished and leaves summary.json and the export as they are (it wrote epochs_done 7 of 6
    and lost the metrics). A finished checkpoint whose export is missing gets its export written."""
    out = tmp_path / "fin"
    args = ["sched.epochs=1", "checkpoint.resume=auto", "verify_export=true"]
    first = run(tiny_cfg(tiny_data, out, *args))
    assert first["status"] == "finished" and first["epochs_done"] == first["epochs_total"] == 1
    capsys.readouterr()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = run(tiny_cfg(tiny_data, out, *args))
    text = capsys.readouterr().out
    assert "the run is already finished" in text and "nothing to train" in text and "nan" not in text
    assert again["nothing_to_do"] and again["epochs_done"] == 1 and again["final"] == first["final"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # killed between the last checkpoint and the export: the re-run exports from last.pth
    import shutil
    shutil.rmtree(out / "weights")
    (out / "summary.json").unlink()
    third = run(tiny_cfg(tiny_data, out, *args))
    text = capsys.readouterr().out
    assert "writing its summary and export" in text and "nan" not in text
    assert third["status"] == "finished" and third["epochs_done"] == 1 and third["epochs_this_run"] == 0
    assert third["final"] == first["final"] and f"trained model: {first['final']['top1']:.2f}%" in text
    from safetensors.torch import load as from_bytes  # the same tensors (the header's key order may vary)
    new = from_bytes((out / "weights" / "model.safetensors").read_bytes())
    old = from_bytes(before[Path("weights/model.safetensors")])
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in old)
    assert third["reloaded"]["top1"] == pytest.approx(first["final"]["top1"], abs=1e-9)


def test_time_limited_stop_saves_the_epoch_it_stopped_after(tiny_data, tmp_path):
    """A run stopped by time_limit_min writes last.pth for its last epoch even off the save_every grid,
    so the epochs it reports as done are the ones a resume continues from."""
    out = tmp_path / "tl"
    part = run(tiny_cfg(tiny_data, out, "sched.epochs=3", "checkpoint.save_every=5", "time_limit_min=1e-6",
                        "eval_every=5"))
    assert part["status"] == "partial" and part["epochs_done"] == 1 and part["stopped_by"] == "time_limit_min"
    from gka_vision.engine.checkpoint import load_checkpoint
    assert load_checkpoint(out / "last.pth")["epoch"] == 0
    assert not (out / "weights").exists()


def _resume_worker(rank, world, port, argv, result_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import contextlib
    import io
    import sys
    sys.path.insert(0, str(REPO))
    import train
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = train.main([a.replace("{rank}", str(rank)) for a in argv])
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"rc": rc, "err": err.getvalue()}))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_resume_auto_on_node_local_outputs_fails_on_every_rank(tiny_data, tmp_path):
    """Two ranks with their own output folders (node-local disks): rank 0 sees last.pth, rank 1 does not.
    Both must stop with the same clear message and exit code 2 (rank 0 resumed, rank 1 restarted and the
    job hung). Then both see a last.pth, but from different epochs: refused the same way."""
    config = str(BUNDLED_CONFIG)
    common = [f"data.root={tiny_data}", "data.batch_size=20", "data.val_batch_size=50", "data.num_workers=0",
              "data.shuffle_buffer=50", "sched.epochs=2", "progress=false", "threads=1", "device=cpu", *TINY_MODEL]
    run(tiny_cfg(tiny_data, tmp_path / "rank0", "stop_after_epoch=0"))  # rank 0's node holds epoch 0
    argv = ["--config", config, *common, f"output={tmp_path}/rank{{rank}}", "checkpoint.resume=auto"]
    spawn_or_fail(_resume_worker, 2, (2, free_port(), argv, str(tmp_path)))
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in res:
        assert r["rc"] == 2, res
        assert len(r["err"].strip().splitlines()) == 1 and "Traceback" not in r["err"], r["err"]
        assert "rank(s) [0] see" in r["err"] and "rank(s) [1] do not" in r["err"] and "shared storage" in r["err"]
    assert not (tmp_path / "rank1" / "last.pth").exists()

    # rank 1's node has a last.pth of its own, from another epoch
    from gka_vision.engine.checkpoint import load_checkpoint, save_checkpoint
    ck = load_checkpoint(tmp_path / "rank0" / "last.pth")
    ck["epoch"], ck["update"] = 1, 2 * ck["update"]
    save_checkpoint(ck, tmp_path / "rank1" / "last.pth")
    spawn_or_fail(_resume_worker, 2, (2, free_port(), argv, str(tmp_path)))
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in res:
        assert r["rc"] == 2, res
        assert "different checkpoints" in r["err"]
        assert "rank 0: next epoch 1" in r["err"] and "rank 1: next epoch 2" in r["err"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_full_disk_during_training_ends_with_one_line(tiny_data, tmp_path, capsys):
    """The checkpoint write of epoch 1 hits a full disk (its temp file is a link to /dev/full): train.py
    says 'no space left on <folder>' in one line, exits 1, removes the temp file, keeps epoch 0's last.pth."""
    import sys
    sys.path.insert(0, str(REPO))
    import train
    from gka_vision.engine.checkpoint import load_checkpoint
    out = tmp_path / "full"
    run(tiny_cfg(tiny_data, out, "stop_after_epoch=0"))
    os.symlink("/dev/full", out / "last.pth.tmp")
    config = str(BUNDLED_CONFIG)
    capsys.readouterr()
    rc = train.main(["--config", config, f"data.root={tiny_data}", f"output={out}", "data.batch_size=20",
                     "data.val_batch_size=50", "data.num_workers=0", "data.shuffle_buffer=50", "sched.epochs=2",
                     "sched.warmup_epochs=0.5", "progress=false", "threads=1", *TINY_MODEL, "checkpoint.resume=auto"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and f"no space left on {out}" in err, err
    assert "iostream" not in err and not os.path.lexists(out / "last.pth.tmp")
    assert load_checkpoint(out / "last.pth")["epoch"] == 0
