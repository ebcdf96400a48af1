"""Two real processes (torch.distributed, gloo), two DataLoader workers each, a shuffle buffer larger
than the data set: in every epoch the steps of both ranks see every sample once before any sample
comes back, the ranks never read the same sample within that pass, and each epoch has its own order."""
import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from epoch_order import check_no_repeat_before_all_seen  # tests/epoch_order.py
from fashion_mnist import write_id_shards  # tests/fashion_mnist.py
from ranks import free_port  # tests/ranks.py

LENGTHS = [23, 17, 9, 31, 2, 14, 11]  # 107 samples in 7 uneven shards
BATCH = 6


def _zero(img):
    return torch.zeros(1)


def _rank(rank, world, port, urls, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from gka_vision.data.pipeline import ShardDataset
    ds = ShardDataset(urls, _zero, BATCH, train=True, num_samples=sum(LENGTHS),
                      shard_lengths=LENGTHS, num_workers=2, seed=5, shuffle_buffer=1000, in_chans=1)
    # forked workers, as under torchrun (these processes were spawned, which would make spawn the default)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append([yb.tolist() for _, yb in loader])
    # every rank took the same number of steps (a collective would hang otherwise)
    steps = torch.tensor([len(e) for e in epochs])
    torch.distributed.all_reduce(steps)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"epochs": epochs, "steps_sum": steps.tolist()}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_gloo_epoch_covers_the_data_set_before_any_repeat(tmp_path):
    urls = write_id_shards(tmp_path, "d", LENGTHS)
    world = 2
    ctx = mp.start_processes(_rank, args=(world, free_port(), urls, str(tmp_path)), nprocs=world, join=False,
                             start_method="spawn")
    while not ctx.join(timeout=240):
        pass
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    n = sum(LENGTHS)
    orders = []
    for e in range(2):
        per_rank = [res[r]["epochs"][e] for r in range(world)]
        assert len(per_rank[0]) == len(per_rank[1]) == 10  # ceil(107 / (6 * 2)) = 9 steps, rounded up to 2 workers
        steps = [per_rank[r][k] for k in range(10) for r in range(world)]  # the order the steps consume them
        check_no_repeat_before_all_seen(steps, n)
        # one pass is 18 chunks = 9 steps (the last one ends with the first sample of the next pass);
        # within it the ranks read disjoint samples
        pure = [set(y for b in per_rank[r][:8] for y in b) for r in range(world)]
        first = [set(y for b in per_rank[r][:9] for y in b) for r in range(world)]
        assert not pure[0] & pure[1] and len(first[0] | first[1]) == n
        orders.append([y for b in steps for y in b])
    assert orders[0] != orders[1]
    assert res[0]["steps_sum"] == res[1]["steps_sum"] == [20, 20]
