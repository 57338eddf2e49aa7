"""Exponential moving average of a model's weights (Polyak averaging; Ho et al. 2020 use 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


class EMA(nn.Module):
    """A copy of ``model`` whose parameters in the sub-networks ``networks`` (attribute paths; ``""``,
    the default, is the whole model) follow theta_ema <- d theta_ema + (1 - d) theta.

    With ``warmup`` the decay of update number ``n`` (counting from 0) is ``min(decay, (1 + n) / (10 + n))``,
    the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` that common trainers use:
    early updates follow the fast-moving weights, so after a short run the average is not dominated
    by the random initialisation (with decay 0.999 and no warm-up, 1000 steps leave 37 % of it).

    The other parameters and all buffers (for example normalisation statistics) are copied as they are,
    so ``module`` is always a complete model to sample from. Frozen networks
    (``pdlib.train.frozen.Frozen``) are shared with ``model``, not copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999, networks=("",), warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.networks = tuple(networks)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        names = [n for n, _ in model.named_parameters()]
        self._averaged = [any(_under(n, p) for p in self.networks) for n in names]

    def decay_at(self, n: int) -> float:
        """The decay of update number ``n`` (0 for the first)."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """Average in ``model``'s current weights as update number ``n`` (the trainer's step count)."""
        d = self.decay_at(n)
        pairs = list(zip(self.module.parameters(), model.parameters()))
        averaged = [(e, p.detach()) for (e, p), a in zip(pairs, self._averaged) if a]
        if averaged:
            torch._foreach_lerp_([e for e, _ in averaged], [p for _, p in averaged], 1.0 - d)
        for (e, p), a in zip(pairs, self._averaged):
            if not a:
                e.copy_(p)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def forward(self, *args, **kw):
        return self.module(*args, **kw)
