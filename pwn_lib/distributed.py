"""torch.distributed for the one Trainer: process groups from torchrun's environment, barriers, means (notebook 08).

``torchrun --nproc_per_node N -m pwn_lib.train ...`` starts N processes and sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init` reads them and joins the group
(NCCL on CUDA, gloo on CPU). Without torchrun every function here is a no-op for one process, so the same
code trains on a laptop and on a cluster.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Rank 0 evaluates and writes checkpoints while the others wait at a barrier; the held-out evaluation of a
# paper-size model can take minutes, more than NCCL's default 10-minute watchdog allows comfortably.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """Where this process sits: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or SLURM through it) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | None = None) -> tuple[World, torch.device]:
    """Join torchrun's process group if there is one; return this process's World and device.

    ``device`` is "cpu", "cuda" or None (CUDA if available). Under torchrun each process takes the GPU
    ``cuda:LOCAL_RANK`` and the group uses NCCL; on CPU it uses gloo.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not launched():
        return World(), torch.device(kind)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        here = torch.device("cuda", local_rank)
    else:
        here = torch.device(kind)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), local_rank), here


def current() -> World:
    """The World of an initialised process group, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks (itself for one process); gloo has no AVG, so SUM / size."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def agree(value: int, device: torch.device) -> bool:
    """True when ``value`` is the same on every rank (always, for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    both = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return both[0].item() == -both[1].item()


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["TIMEOUT", "World", "agree", "barrier", "current", "init", "launched", "mean", "shutdown"]
