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
    """Routes ``method.loss`` through ``forward`` so that ``DistributedDataParallel`` can hook it."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, x0: torch.Tensor, **kw) -> dict:
        return self.method.loss(x0, **kw)


def wrap_for_training(method: nn.Module, device: torch.device) -> nn.Module:
    """``LossModule(method)``, inside ``DDP`` when a process group is running."""
    module = LossModule(method)
    if world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    return module


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
