"""Several processes (``accelerate launch``): who am I, wait for the others, sum gradients.

A single process needs none of this and never initialises torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    device: str | None = None  # this process's device when several share a machine's GPUs

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as ``accelerate launch`` / ``torchrun`` set it (0 when run alone),
    read without starting torch.distributed."""
    return int(os.environ.get("RANK", "0"))


def process_info(device: str = "cpu") -> ProcessInfo:
    """Rank and world size. Launched with several processes (``accelerate launch
    --multi_gpu`` or ``torchrun``, which set ``WORLD_SIZE``), this initialises the process
    group through accelerate: gloo on the CPU, NCCL on GPUs (one per process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessInfo()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return ProcessInfo(state.process_index, state.num_processes, None if device == "cpu" else str(state.device))


def wait_for_everyone(info: ProcessInfo) -> None:
    if info.world_size > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def sum_gradients(parameters, info: ProcessInfo) -> None:
    """All-reduce (sum) the gradients of ``parameters`` across processes."""
    if info.world_size <= 1:
        return
    import torch.distributed as dist

    for param in parameters:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def sum_across(value, info: ProcessInfo):
    """A tensor summed over the processes (all-reduce on a copy); itself with one process."""
    if info.world_size <= 1:
        return value
    import torch.distributed as dist

    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def min_across(value: int, info: ProcessInfo) -> int:
    """The smallest ``value`` of all processes (itself with one process)."""
    if info.world_size <= 1:
        return value
    import torch
    import torch.distributed as dist

    device = info.device if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces device tensors only
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def grad_norm(parameters) -> float:
    """The total L2 norm of the gradients of ``parameters`` (those that have one), as
    ``clip_grad_norm_`` measures it, without touching them."""
    import torch

    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
