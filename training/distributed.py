"""torchrun support: DistributedDataParallel with NCCL on GPUs and gloo on CPUs.

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_spec: str) -> World:
    """Join the process group torchrun describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    # Share the cores between the processes on this machine instead of oversubscribing them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(rank=rank, local_rank=local_rank, size=size)


def device_for(world: World, device: torch.device) -> torch.device:
    """With several processes on a GPU machine, each takes the GPU of its local rank."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's equal share (every rank must run the same number of steps)."""
    if not world.distributed:
        return indices
    usable = len(indices) - len(indices) % world.size
    return indices[world.rank:usable:world.size]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
