"""Exponential moving average of a model's weights (Polyak averaging; Ho et al. 2020 use 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of ``model`` whose parameters follow theta_ema <- d theta_ema + (1 - d) theta.

    Buffers (for example normalisation statistics) are copied as they are. ``module`` is the averaged
    model to sample from."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def forward(self, *args, **kw):
        return self.module(*args, **kw)
