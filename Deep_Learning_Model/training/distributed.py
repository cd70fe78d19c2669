"""DistributedDataParallel plumbing: the torchrun environment, process group, reductions and barriers.

``torchrun --nproc_per_node=N Deep_Learning_Model/train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them training runs as a single process and every function here is a no-op.
Backends: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

#: Rank 0 validates while the others wait at a barrier; allow slow validations before NCCL/gloo time out.
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Started by torchrun: DDP even with one process (the same code path as N processes).
    torchrun: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.torchrun or self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, validates and writes files."""
        return self.rank == 0


def context_from_env() -> DistContext:
    """The torchrun variables, or a single-process context when they are absent."""
    return DistContext(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        torchrun="RANK" in os.environ and "WORLD_SIZE" in os.environ,
    )


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the torchrun job (NCCL on CUDA, gloo otherwise); a single process outside torchrun joins nothing."""
    if ctx.is_distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=TIMEOUT, **kwargs)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_ints(value: int, ctx: DistContext, device: torch.device) -> list[int]:
    """``value`` of every rank, in rank order."""
    tensor = torch.zeros(ctx.world_size, dtype=torch.int64, device=device)
    tensor[ctx.rank] = value
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()
