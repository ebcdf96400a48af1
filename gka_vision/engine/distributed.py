"""torch.distributed setup for single-process and torchrun (env://) runs."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistState:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistState:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; init NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://",
                                **({"device_id": dev} if use_cuda else {}))
    return DistState(rank, world, local_rank, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def rank_values(values, ds: DistState) -> list:
    """Every rank's ``values`` (a list of numbers), as a list indexed by rank, on every rank; a
    collective, so every rank must call it. Row r comes from rank r alone (one-hot all-reduce), which
    works on gloo and NCCL alike."""
    t = torch.zeros(ds.world_size, len(values), dtype=torch.float64, device=ds.device)
    t[ds.rank] = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ds.device)
    return all_reduce_sum(t).tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
