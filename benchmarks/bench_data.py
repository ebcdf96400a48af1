#!/usr/bin/env python
"""Input-pipeline benchmark on ImageNet-sized JPEGs: images/s per DataLoader worker and per process,
and the loader's resident memory, with the ImageNet training transforms of a config.

    python benchmarks/bench_data.py                       # 3000 images from Fashion-MNIST, 20 s per case
    python benchmarks/bench_data.py --images 5000 --workers 1 2 4 --seconds 30 --json bench_data.json
    python benchmarks/bench_data.py --shards /data/in1k-wds --split train      # real ImageNet shards

Without ``--shards`` it first makes the data: ``--images`` 500x375 JPEGs (ImageNet's typical size),
each a 4x3 mosaic of real Fashion-MNIST images (``--src``: the IDX files; default the full set under
../shared/data/fashion-mnist, else the bundled sample), upscaled, coloured and given sensor-like
noise so that the files have ImageNet's bytes per image (about 110 KB at quality 90), written as an
ImageFolder tree and turned into shards by ``python -m gka_vision.tools.make_shards imagefolder``.

Cases (each ``--seconds`` of steady state after the first batch, which waits for the shuffle buffer):
  decode       PIL decode to RGB only (no transform): the floor of the per-image cost
  worker       the training ShardDataset in this process (num_workers=0): read, shuffle buffer of
               encoded samples, decode, label check, RandomResizedCrop/flip/RandAugment/erasing,
               normalise, batch of B. This is the rate of one DataLoader worker.
  process W    DataLoader(num_workers=W) as train.py builds it: the rate one training process gets,
               and the resident memory of its workers (RSS and PSS: PSS splits pages shared with the
               parent, so the PSS sum is what the process costs the machine)

Prints a markdown table (with the command, CPU and date) and, with ``--json``, writes every number.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO.parent / "shared" / "data" / "fashion-mnist"


# ---------------------------------------------------------------------------- making the data

def _fmnist_images(src: Path | None):
    """(uint8 images [N, 28, 28], labels [N]) from the IDX files, else from the bundled shards."""
    from gka_vision.data.shards import find_idx, read_idx
    if src is not None and any((src / f).exists() for f in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        return read_idx(find_idx(src, "train-images-idx3-ubyte")), read_idx(find_idx(src, "train-labels-idx1-ubyte"))
    from PIL import Image
    from gka_vision.data.shards import iter_tar_samples, load_info
    from gka_vision.engine.config import BUNDLED_ROOT
    imgs, labels = [], []
    for f in load_info(BUNDLED_ROOT)["splits"]["train"]["filenames"]:
        for s in iter_tar_samples(os.path.join(BUNDLED_ROOT, f)):
            imgs.append(np.array(Image.open(io.BytesIO(s["png"]))))
            labels.append(int(s["cls"]))
    return np.stack(imgs), np.array(labels)


def make_photo(tiles: np.ndarray, rng: np.random.Generator, noise: float = 20.0):
    """A 500x375 RGB image: 4x3 tiles of 125 px (upscaled 28 px images), each with its own colours,
    plus Gaussian noise (what makes camera JPEGs as large as they are)."""
    from PIL import Image
    canvas = np.empty((375, 500, 3), np.float32)
    for t, img in enumerate(tiles):
        ty, tx = divmod(t, 4)
        a = np.asarray(Image.fromarray(img).resize((125, 125), Image.BICUBIC), np.float32)[..., None] / 255.0
        fg, bg = rng.uniform(0.3, 1.0, 3) * 255, rng.uniform(0.0, 0.6, 3) * 255
        canvas[ty * 125:(ty + 1) * 125, tx * 125:(tx + 1) * 125] = a * fg + (1 - a) * bg
    canvas += rng.normal(0.0, noise, canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def make_dataset(out: Path, n: int, src: Path | None, quality: int = 90, noise: float = 20.0,
                 samples_per_shard: int = 500, seed: int = 0) -> dict:
    """``n`` JPEGs in an ImageFolder tree under ``out/jpeg`` (class = the first tile's label), then
    shards in ``out/wds`` through make_shards; returns the split's _info.json entry plus sizes."""
    from gka_vision.tools import make_shards
    imgs, labels = _fmnist_images(src)
    rng = np.random.default_rng(seed)
    tree = out / "jpeg"
    sizes = []
    for i in range(n):
        idx = rng.integers(0, len(imgs), 12)
        folder = tree / f"c{int(labels[idx[0]]):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        make_photo(imgs[idx], rng, noise).save(buf, format="JPEG", quality=quality)
        (folder / f"img{i:06d}.JPEG").write_bytes(buf.getvalue())
        sizes.append(buf.tell())
    rc = make_shards.main(["imagefolder", "--src", str(tree), "--out", str(out / "wds"), "--split", "train",
                           "--prefix", "bench", "--samples-per-shard", str(samples_per_shard)])
    if rc != 0:
        raise SystemExit(f"make_shards failed (exit {rc})")
    from gka_vision.data.shards import load_info
    entry = load_info(out / "wds")["splits"]["train"]
    return dict(entry, mean_jpeg_bytes=float(np.mean(sizes)), jpeg_size=[500, 375], quality=quality, noise=noise)


# ---------------------------------------------------------------------------- memory

def _proc_kb(pid: int, name: str, field: str) -> int:
    """A "<field>: <n> kB" line of /proc/<pid>/<name> (status, smaps_rollup), in kB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int) -> int:
    return _proc_kb(pid, "status", "VmRSS")


def _pss_kb(pid: int) -> int:
    return _proc_kb(pid, "smaps_rollup", "Pss")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


class MemorySampler(threading.Thread):
    """Peak RSS and PSS of this process and of its DataLoader workers, sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_worker_rss = self.peak_worker_pss = self.peak_total_pss = self.peak_main_rss = 0

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            kids = _children(me)
            rss = [_rss_kb(k) for k in kids]
            pss = [_pss_kb(k) for k in kids]
            self.peak_worker_rss = max(self.peak_worker_rss, max(rss, default=0))
            self.peak_worker_pss = max(self.peak_worker_pss, max(pss, default=0))
            self.peak_total_pss = max(self.peak_total_pss, sum(pss) + _pss_kb(me))
            self.peak_main_rss = max(self.peak_main_rss, _rss_kb(me))
            self.stop.wait(0.2)


# ---------------------------------------------------------------------------- cases

def _timed(batches, seconds: float, batch: int, cpu=None):
    """Images/s over the batches after the first, for about ``seconds``; also the CPU seconds that
    ``cpu()`` (a callable) reports for that window. (rate, images, first batch s, cpu s)."""
    t0 = time.perf_counter()
    it = iter(batches)
    next(it)
    t1 = time.perf_counter()
    c1 = cpu() if cpu else 0.0
    n = 0
    for _ in it:
        n += batch
        if time.perf_counter() - t1 >= seconds:
            break
    dt = time.perf_counter() - t1
    c2 = cpu() if cpu else 0.0
    return (n / dt if dt > 0 else float("nan")), n, t1 - t0, c2 - c1


def bench_decode(urls, seconds: float) -> dict:
    from PIL import Image
    from gka_vision.data.shards import iter_tar_samples
    blobs = []
    for u in urls:
        blobs += [s["jpg"] for s in iter_tar_samples(u) if "jpg" in s]
        if len(blobs) >= 500:
            break
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        Image.open(io.BytesIO(blobs[n % len(blobs)])).convert("RGB")
        n += 1
    return {"case": "decode", "img_s": n / (time.perf_counter() - t0), "images": n,
            "img_per_cpu_s": n / max(1e-9, time.process_time() - c0)}


def build(cfg, root: str, workers: int):
    import dataclasses
    from gka_vision.data.loader import build_train_loader
    from gka_vision.data.pipeline import SkipCounter
    dc = dataclasses.replace(cfg.data, num_workers=workers, root=root)
    loader, ds = build_train_loader(dc, cfg.aug, root, seed=0, skip_counter=SkipCounter())
    ds.batches_per_worker = 10**6  # one long epoch (passes follow each other): workers live through the window
    return loader, ds


def bench_worker(cfg, root: str, seconds: float) -> dict:
    import torch
    torch.set_num_threads(1)
    _, ds = build(cfg, root, 0)
    rate, n, first, cpu = _timed(ds, seconds, cfg.data.batch_size, time.process_time)
    return {"case": "worker", "workers": 0, "img_s": rate, "img_s_per_worker": rate, "images": n,
            "first_batch_s": first, "img_per_cpu_s": n / max(1e-9, cpu),
            "main_rss_mb": _rss_kb(os.getpid()) / 1024}


def bench_process(cfg, root: str, workers: int, seconds: float) -> dict:
    loader, ds = build(cfg, root, workers)
    mem = MemorySampler()
    mem.start()
    try:
        me = os.getpid()
        rate, n, first, cpu = _timed(loader, seconds, cfg.data.batch_size,
                                     lambda: sum(_cpu_s(k) for k in _children(me)))
    finally:
        mem.stop.set()
        mem.join()
    return {"case": "process", "workers": workers, "img_s": rate, "img_s_per_worker": rate / workers, "images": n,
            "first_batch_s": first, "img_per_cpu_s": n / max(1e-9, cpu), "peak_worker_rss_mb": mem.peak_worker_rss / 1024,
            "peak_worker_pss_mb": mem.peak_worker_pss / 1024, "peak_total_pss_mb": mem.peak_total_pss / 1024,
            "main_rss_mb": mem.peak_main_rss / 1024}


# ---------------------------------------------------------------------------- main

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/imagenet/gkavision_tiny.yaml"),
                    help="the training config whose data/aug blocks are measured (default: %(default)s)")
    ap.add_argument("--shards", default=None, help="measure these shards (a folder with _info.json) instead")
    ap.add_argument("--split", default="train")
    ap.add_argument("--src", default=str(DEFAULT_SRC), help="Fashion-MNIST IDX folder for the made images")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--work", default=None, help="where the made images and shards go (default: a temp folder)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader workers per process case")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady-state time per case")
    ap.add_argument("--batch-size", type=int, default=None, help="override the config's data.batch_size")
    ap.add_argument("--shuffle-buffer", type=int, default=None, help="override the config's data.shuffle_buffer")
    ap.add_argument("--gpu-rate", type=float, default=None,
                    help="training img/s of one GPU, to state the workers it needs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from gka_vision.engine.config import load_config
    over = ["data.root=bundled"]
    if args.batch_size:
        over.append(f"data.batch_size={args.batch_size}")
    if args.shuffle_buffer:
        over.append(f"data.shuffle_buffer={args.shuffle_buffer}")
    cfg = load_config(args.config, over)
    res = {"command": "python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "config": os.path.relpath(args.config, REPO), "batch_size": cfg.data.batch_size,
           "shuffle_buffer": cfg.data.shuffle_buffer, "img_size": cfg.data.img_size,
           "auto_augment": cfg.aug.auto_augment, "re_prob": cfg.aug.re_prob, "cases": []}
    import torch
    import PIL
    res["versions"] = {"torch": torch.__version__, "pillow": PIL.__version__, "python": platform.python_version()}
    try:
        from PIL import features
        res["versions"]["libjpeg_turbo"] = bool(features.check_feature("libjpeg_turbo"))
    except Exception:  # noqa: BLE001
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if args.shards:
            root = args.shards
            from gka_vision.data.shards import load_info
            res["data"] = load_info(root)["splits"][args.split]
        else:
            t0 = time.time()
            src = Path(args.src) if args.src and Path(args.src).is_dir() else None
            res["data"] = make_dataset(work, args.images, src)
            res["data"]["made_in_s"] = round(time.time() - t0, 1)
            res["data"]["source"] = str(src) if src else "bundled sample"
            root = str(work / "wds")
        cfg.data.train_split = args.split
        res["data"].pop("filenames", None)
        res["data"].pop("shard_lengths", None)
        from gka_vision.data.pipeline import expand_urls
        urls, _, _ = expand_urls(root, args.split)
        res["load_before"] = os.getloadavg()
        res["cases"].append(bench_decode(urls, min(args.seconds, 10)))
        print(f"decode: {res['cases'][-1]['img_s']:.0f} img/s", flush=True)
        res["cases"].append(bench_worker(cfg, root, args.seconds))
        print(f"worker: {res['cases'][-1]['img_s']:.0f} img/s", flush=True)
        for w in args.workers:
            res["cases"].append(bench_process(cfg, root, w, args.seconds))
            print(f"process, {w} workers: {res['cases'][-1]['img_s']:.0f} img/s", flush=True)
        res["load_after"] = os.getloadavg()
    # a DataLoader worker's images per CPU-second (the batch hand-over to the main process included)
    per_core = [c for c in res["cases"] if c["case"] == "process"][-1]["img_per_cpu_s"] if args.workers else \
        next(c["img_per_cpu_s"] for c in res["cases"] if c["case"] == "worker")
    res["img_per_cpu_s_used"] = per_core
    if args.gpu_rate:
        res["gpu_rate"] = args.gpu_rate
        res["workers_needed"] = args.gpu_rate / per_core
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def table(res: dict) -> str:
    d = res["data"]
    size = d.get("mean_jpeg_bytes")
    L = [f"- command: `{res['command']}`",
         f"- CPU: {res['cpu']} ({res['cpu_count']} cores); load average before/after: "
         f"{', '.join(f'{x:.1f}' for x in res['load_before'])} / {', '.join(f'{x:.1f}' for x in res['load_after'])}",
         f"- date (UTC): {res['date_utc']}; {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
         f"- data: {d.get('num_samples')} images" + (f", 500x375 JPEG, mean {size / 1e3:.1f} KB" if size else "")
         + f"; transforms of `{res['config']}` at {res['img_size']} px (RandAugment `{res['auto_augment']}`, "
         f"random erasing {res['re_prob']}), batch {res['batch_size']}, shuffle buffer {res['shuffle_buffer']} per worker",
         "", "| case | DataLoader workers | img/s | img/s per worker | img per CPU-second | first batch (s) "
         "| peak RSS per worker (MB) | peak PSS per worker (MB) | PSS of process + workers (MB) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        L.append("| " + " | ".join([
            {"decode": "PIL decode only", "worker": "training pipeline in-process",
             "process": "DataLoader (train.py's)"}[c["case"]],
            str(c.get("workers", "-")), f"{c['img_s']:.0f}",
            f"{c['img_s_per_worker']:.0f}" if "img_s_per_worker" in c else "-",
            f"{c['img_per_cpu_s']:.0f}" if "img_per_cpu_s" in c else "-",
            f"{c['first_batch_s']:.1f}" if "first_batch_s" in c else "-",
            f"{c['peak_worker_rss_mb']:.0f}" if "peak_worker_rss_mb" in c else "-",
            f"{c['peak_worker_pss_mb']:.0f}" if "peak_worker_pss_mb" in c else "-",
            f"{c['peak_total_pss_mb']:.0f}" if "peak_total_pss_mb" in c else "-"]) + " |")
    if "workers_needed" in res:
        L.append("")
        L.append(f"A GPU training at {res['gpu_rate']:.0f} img/s needs {res['workers_needed']:.1f} busy cores of "
                 f"this CPU for its input pipeline ({res['img_per_cpu_s_used']:.0f} images per CPU-second of a "
                 "DataLoader worker), i.e. that many DataLoader workers with a core each, plus the training "
                 "process's own core.")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
