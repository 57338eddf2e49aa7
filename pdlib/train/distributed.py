"""DistributedDataParallel under ``torchrun``: set-up, rank queries and the loss wrapper.

``torchrun --nproc_per_node=N -m pdlib train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
the trainer then calls ``init_distributed()`` and wraps the method with ``DDP`` (no home-made scheme).
Gradients are averaged over processes, which equals the gradient of the mean loss over the combined
batch; only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): the one process that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> None:
    """Join the process group that torchrun set up: NCCL on CUDA, gloo on the CPU."""
    if dist.is_initialized() or not launched_by_torchrun():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this process under torchrun (``LOCAL_RANK``), else ``device`` unchanged."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class LossModule(nn.Module):
    """Routes a method's loss through ``forward`` so that ``DistributedDataParallel`` can hook it:
    ``method.phase_loss(phase, x0, step=..., progress=..., **kw)`` when the method defines it, else
    ``method.loss(x0, **kw)``."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, x0: torch.Tensor, *, phase: str, step: int, progress: float, **kw) -> dict:
        if hasattr(self.method, "phase_loss"):
            return self.method.phase_loss(phase, x0, step=step, progress=progress, **kw)
        return self.method.loss(x0, **kw)


def wrap_for_training(method: nn.Module, device: torch.device, several_phases: bool = False) -> nn.Module:
    """``LossModule(method)``, inside ``DDP`` when a process group is running. With several phases
    (a discriminator step, then a generator step) each phase leaves some weights without a gradient,
    which DDP must be told about (``find_unused_parameters``)."""
    module = LossModule(method)
    if world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                     find_unused_parameters=several_phases)
    return module


def all_gather(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a list of one element when not distributed)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (so that all ranks act together)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
