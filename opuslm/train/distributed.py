"""Process-group setup and model wrapping (DDP / FSDP), kept out of the model and the loop.

Under `torchrun` (WORLD_SIZE set) the default process group is initialised from the environment:
nccl on GPU, gloo on CPU. Without torchrun the run is a single process and every collective here is
a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the torchrun process group (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a single process); returns the tensor."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list[object]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def wrap_model(model: torch.nn.Module, parallel: str, info: DistInfo) -> torch.nn.Module:
    """DDP (default) or FSDP2 `fully_shard` per transformer block then the root.

    Single-process runs are returned unwrapped. FSDP shards each module class the Hugging Face body
    lists in `_no_split_modules` (its decoder layers).
    """
    model.to(info.device)
    if not info.distributed:
        return model
    if parallel == "ddp":
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        block_names = set(getattr(getattr(model, "body", model), "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in block_names:
                fully_shard(module)
        fully_shard(model)
        return model
    raise ValueError(f"unknown parallel mode {parallel!r}; choose ddp or fsdp")


def set_gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Turn gradient all-reduce on (last micro-batch) or off (earlier ones) for DDP and FSDP2."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = enabled
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
