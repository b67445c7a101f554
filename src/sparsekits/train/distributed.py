"""Running under ``torchrun``: process group setup, sharding, and the reductions training needs.

Without torchrun's environment (``WORLD_SIZE`` unset) everything degrades to one process, so the
same training loop serves a laptop and ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sparsekits.device import resolve_device
from sparsekits.errors import InputError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (logs, checkpoints, the model folder)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); one GPU per local rank, or
    alone the one ``device`` names (``cuda:N``; ``auto``: CUDA when present)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch_device = torch.device(resolve_device(device))
    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but CUDA is not available")
        if world_size > 1 and torch_device.index is not None:
            raise InputError(
                f"--device {device}", "under torchrun each rank takes cuda:LOCAL_RANK; use cuda"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        index = local_rank if torch_device.index is None else torch_device.index
        torch_device = torch.device("cuda", index)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, device=torch_device)


def shutdown_distributed(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum of ``values`` (float64 on the compute device) over all ranks; unchanged alone."""
    if not context.enabled:
        return values
    values = values.to(context.device, torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def all_gather_objects(value: object, context: DistContext) -> list:
    """Every rank's ``value`` in rank order (picklable values: RNG states, counters)."""
    if not context.enabled:
        return [value]
    gathered: list = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()
