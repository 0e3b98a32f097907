"""Data-parallel training through `torch.distributed`, launched by `torchrun`.

    torchrun --nproc_per_node 2 -m wrapperlens pretrain --preset tiny --out runs/pt

Under `torchrun` every process (rank) runs the same command. The trainer then splits each step's
global batch by rows (rank r takes rows r, r + W, r + 2W, ... of the `W` processes), computes
the *sum* of its token losses divided by the global number of loss tokens, and all-reduces
(sums) the gradients: the update is the gradient of the global mean loss, exactly what one process
computes on the whole batch, up to the order of float additions. Gradient clipping, AdamW and the
schedule then run identically on every rank, so the replicas stay equal without broadcasting
weights. Rank 0 alone evaluates and writes files; the others wait at the next all-reduce.

Backends: gloo on CPU, NCCL on CUDA (each rank takes GPU `LOCAL_RANK`). Outside `torchrun`
(no `WORLD_SIZE` in the environment) everything here is a no-op and training is single-process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "launched_by_torchrun",
    "init_from_env",
    "world_size",
    "rank",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "all_reduce_gradients",
    "local_device",
]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: str) -> str:
    """The device of this rank: `cuda:LOCAL_RANK` for a CUDA run under torchrun, else `device`."""
    if launched_by_torchrun() and device.startswith("cuda") and ":" not in device:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init_from_env(device: str) -> bool:
    """Join the process group `torchrun` set up (gloo on CPU, NCCL on CUDA); True if joined.

    Idempotent: a group that is already initialised is kept.
    """
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """`value` summed over ranks (in place, and returned)."""
    if world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_gradients(model: torch.nn.Module) -> None:
    """Sum every parameter's gradient over ranks, in one flat buffer (one collective call)."""
    if world_size() == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)  # views keep `flat` alive; no copy
        offset += n
