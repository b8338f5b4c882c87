"""Data parallelism under torchrun: process-group setup from the environment and gradient averaging.

The recipes expose two losses over two parameter subsets rather than a `forward`, so instead of wrapping them in
DistributedDataParallel the trainer averages the trainable gradients itself after each accumulated step
(one flattened all-reduce per optimizer), which is what DDP does without its forward hooks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a single process needs nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average .grad of `params` over all processes in one flattened all-reduce."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(info.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Start every process from rank 0's trainable weights."""
    if not info.enabled:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def average_scalars(values: dict[str, float], info: DistInfo, device) -> dict[str, float]:
    """Mean of each logged scalar over processes (same keys on every process)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def check_in_sync(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Raise if the trainable weights differ between processes (they must stay bit-identical)."""
    if not info.enabled or not params:
        return
    with torch.no_grad():
        mine = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).cpu()
    sums = gather_objects(mine, info)
    if any(not torch.equal(sums[0], s) for s in sums[1:]):
        raise RuntimeError("trainable weights differ between processes; data-parallel training lost sync")
