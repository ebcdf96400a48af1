"""Fixtures shared by the test folders, which mirror the package: ops/, models/, data/, engine/, benchmarks/,
and gpu/ (every CUDA test, marked ``gpu``). Tests slower than about 15 s on a 2-core CPU are marked ``slow``:
``pytest -m "not slow"`` is the quick loop, CI runs everything.

Helper modules live beside this file and are imported by name from any folder (this folder is put on
sys.path below); no test file imports another test file:

* fashion_mnist.py: bundled Fashion-MNIST images, small shard folders, the bundled config made tiny;
* ranks.py: several gloo ranks on one CPU; epoch_order.py: checks of an epoch's sample order;
* tiny_models.py: one tiny configuration per model family; study_runs.py: fake run folders of the study;
* benchmark_scripts.py: the scripts of benchmarks/ as modules; timm_api.py: the timm-API checks of the
  model families.
"""
import sys
from pathlib import Path

import pytest
import torch

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:  # pytest's default import mode does this for a conftest; other modes do not
    sys.path.insert(0, TESTS)


@pytest.fixture(scope="session", autouse=True)
def one_intra_op_thread():
    """Every test starts on one intra-op thread, whichever files were collected: the test modules that set
    a count at import would otherwise decide it for the whole session by their collection order, and
    on a busy 2-core machine two spinning threads make small CPU kernels many times slower."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """200 real training images in 4 uneven shards (60/40/60/40) and 100 test images in 2 shards."""
    from fashion_mnist import write_shard_folder
    return write_shard_folder(tmp_path_factory.mktemp("tinyfm"), {"train": [60, 40, 60, 40], "test": [50, 50]})
