"""The interface every method implements: a loss and a sampler around networks, plus what it trains.

A method (DDPM, Cas-DM, DDGAN, ...) is an ``nn.Module`` holding its networks. The trainer asks it:

- ``optimizers()``: a list of ``pdlib.train.OptimizerSpec`` (default: one AdamW over every trainable
  weight, with ``TrainConfig``'s settings);
- ``phases()``: a list of ``pdlib.train.Phase`` (default: one phase, ``"main"``);
- ``ema_networks``: the sub-networks whose weights are averaged for sampling (default: all);
- ``phase_loss(phase, x0, *, step, progress, generator, **cond)``: the loss dict of one phase, where
  ``progress = step / total steps`` lets a loss depend on training progress (LDDGAN's weighting);
  the default runs ``loss(x0, generator=..., **cond)``.

Networks the method uses but does not train are wrapped in ``pdlib.train.Frozen``.
"""

from __future__ import annotations

from torch import nn

from ..train.plan import WHOLE, OptimizerSpec, Phase


class Method(nn.Module):
    """Base class with the single-phase defaults; subclasses implement ``loss`` and ``sample``."""

    ema_networks: tuple = (WHOLE,)

    def optimizers(self) -> list[OptimizerSpec]:
        return [OptimizerSpec()]

    def phases(self) -> list[Phase]:
        return [Phase()]

    def phase_loss(self, phase: str, x0, *, step: int, progress: float, generator=None, **cond) -> dict:
        return self.loss(x0, generator=generator, **cond)

    def loss(self, x0, *, generator=None, **cond) -> dict:
        raise NotImplementedError

    def sample(self, n_or_shape, *, steps=None, generator=None, **kw):
        raise NotImplementedError
