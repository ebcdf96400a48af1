"""benchmarks/bench_data.py: the ImageNet-sized JPEGs it makes (500x375, ImageNet's bytes per image,
real Fashion-MNIST content) go through make_shards, and a short run reports every case with its
rates and the workers' memory."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmark_scripts import load_benchmark
from gka_vision.data.shards import iter_tar_samples

bd = load_benchmark("bench_data")


def test_made_images_are_imagenet_sized_jpegs_in_shards(tmp_path):
    info = bd.make_dataset(tmp_path, 12, None, samples_per_shard=5)  # None: the bundled sample's images
    assert info["num_samples"] == 12 and len(info["filenames"]) == 3
    assert 60_000 < info["mean_jpeg_bytes"] < 200_000
    s = next(iter(iter_tar_samples(tmp_path / "wds" / info["filenames"][0])))
    img = Image.open(io.BytesIO(s["jpg"]))
    assert img.format == "JPEG" and img.size == (500, 375) and img.mode == "RGB"
    assert np.asarray(img).std() > 20  # real content plus noise, not a flat image


@pytest.mark.slow
def test_short_run_reports_every_case(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bd.main(["--images", "40", "--seconds", "0.5", "--workers", "1", "--batch-size", "4",
                    "--shuffle-buffer", "16", "--src", str(tmp_path / "none"), "--work", str(tmp_path / "w"),
                    "--gpu-rate", "1000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    cases = {c["case"]: c for c in res["cases"]}
    assert set(cases) == {"decode", "worker", "process"}
    assert all(c["img_s"] > 0 and c["img_per_cpu_s"] > 0 for c in res["cases"])
    assert cases["process"]["peak_worker_rss_mb"] > 50 and cases["process"]["peak_total_pss_mb"] > 50
    assert res["workers_needed"] == pytest.approx(1000 / res["img_per_cpu_s_used"])
    table = capsys.readouterr().out
    assert "| DataLoader (train.py's) | 1 |" in table and "busy cores" in table
