"""Several ranks on one CPU (torch.distributed over gloo): a free port, and processes that fail the test
instead of hanging it."""
import socket
import time

import pytest
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_or_fail(fn, world, args, deadline_s=150):
    """Start ``world`` processes; a hang fails the test after ``deadline_s`` instead of blocking it."""
    ctx = mp.start_processes(fn, args=args, nprocs=world, join=False, start_method="spawn")
    t_end = time.time() + deadline_s
    while not ctx.join(timeout=5):
        if time.time() > t_end:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"the {world} ranks did not finish within {deadline_s} s (hung in a collective?)")
