"""What a method declares about its training: optimisers, phases and the networks that get an EMA.

The trainer walks a method's phases (as StyleGAN2-ADA's training loop walks ``Gmain``/``Dmain``/
``Dreg``) instead of hard-wiring one loss and one optimiser:

- an :class:`OptimizerSpec` names the method's sub-networks it updates and may override the learning
  rate, Adam betas and weight decay of ``TrainConfig``;
- a :class:`Phase` is one loss, computed by ``method.phase_loss(name, x0, ...)``, back-propagated and
  applied by one optimiser, every ``every`` steps (lazy regularisation, e.g. R1 every 16 steps);
- ``ema_networks`` names the sub-networks whose weights are averaged for sampling.

A method that declares nothing (it only has ``loss``) trains as one phase, ``"main"``, with one AdamW
over all its trainable weights and an EMA of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

WHOLE = ""  # the name of the whole method as a sub-network


@dataclass(frozen=True)
class OptimizerSpec:
    """One AdamW optimiser over the sub-networks ``networks`` (attribute paths of the method; ``""`` is
    the whole method). ``None`` settings take the value of ``TrainConfig``."""

    name: str = "main"
    networks: tuple = (WHOLE,)
    lr: float | None = None
    betas: tuple | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class Phase:
    """One loss and the optimiser it updates, run on steps where ``step % every == 0``."""

    name: str = "main"
    optimizer: str = "main"
    every: int = 1

    def __post_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"phase {self.name!r}: every must be a positive int, got {self.every!r}")

    def due(self, step: int) -> bool:
        return step % self.every == 0


@dataclass(frozen=True)
class TrainingPlan:
    optimizers: tuple
    phases: tuple
    ema_networks: tuple

    @property
    def single(self) -> bool:
        """One phase and one optimiser: log keys carry no phase or optimiser prefix."""
        return len(self.phases) == 1 and len(self.optimizers) == 1


def training_plan(method: nn.Module) -> TrainingPlan:
    """The plan ``method`` declares (``optimizers()``, ``phases()``, ``ema_networks``), with the
    single-phase defaults for what it leaves out; checked for consistency."""
    optimizers = tuple(method.optimizers()) if hasattr(method, "optimizers") else (OptimizerSpec(),)
    phases = tuple(method.phases()) if hasattr(method, "phases") else (Phase(),)
    ema = tuple(getattr(method, "ema_networks", (WHOLE,)))
    names = [o.name for o in optimizers]
    if not optimizers or len(set(names)) != len(names):
        raise ValueError(f"a method needs optimisers with distinct names, got {names}")
    for phase in phases:
        if phase.optimizer not in names:
            raise ValueError(f"phase {phase.name!r} uses optimiser {phase.optimizer!r}; declared: {names}")
    if len(phases) > 1 and not hasattr(method, "phase_loss"):
        raise ValueError("a method with several phases must define phase_loss(phase, x0, ...)")
    if len({p.name for p in phases}) != len(phases):
        raise ValueError(f"phase names must be distinct, got {[p.name for p in phases]}")
    for sub in {n for o in optimizers for n in o.networks} | set(ema):
        method.get_submodule(sub)  # raises AttributeError naming a sub-network that does not exist
    return TrainingPlan(optimizers, phases, ema)


def parameters_of(method: nn.Module, networks) -> list:
    """The trainable parameters of the named sub-networks, each once, in a fixed order."""
    seen, out = set(), []
    for sub in networks:
        for p in method.get_submodule(sub).parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


__all__ = ["OptimizerSpec", "Phase", "TrainingPlan", "WHOLE", "parameters_of", "training_plan"]
