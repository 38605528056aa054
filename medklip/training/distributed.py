"""One code path for 1..N processes on 1..M nodes: DDP set up from torchrun's environment (nanoGPT style).

torchrun --standalone --nproc-per-node 2 -m medklip.train ...      # RANK, WORLD_SIZE, LOCAL_RANK set
python -m medklip.train ...                                        # no RANK: a single process, no process group
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class DistributedInfo:
    """Where this process sits; `is_main` gates every file write and log line."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def setup() -> DistributedInfo:
    """Initialises the process group when launched by torchrun (nccl on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return DistributedInfo(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        # A collective that waits longer than this fails, so torchrun restarts the group instead of hanging when a
        # peer died mid-step (PyTorch's default is 30 minutes for gloo, 10 for nccl).
        timeout = timedelta(seconds=float(os.environ.get("MEDKLIP_DIST_TIMEOUT_S", "600")))
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistributedInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value, info: DistributedInfo):
    """Rank 0's `value` on every rank (any picklable object); the value itself without a process group."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistributedInfo) -> None:
    if info.enabled:
        dist.barrier()
