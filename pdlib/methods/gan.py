"""Generative adversarial networks: the losses, the R1 penalty and a plain GAN method (book chapter "GANs").

A generator G maps noise z to data; a discriminator D maps data to a logit (its estimate of the log-odds
that the input is real). With ``sigma`` the logistic function and ``softplus(u) = log(1 + e^u)``
(Goodfellow et al. 2014, eq. 1 and section 3):

- discriminator loss  ``L_D = E[softplus(-D(x))] + E[softplus(D(G(z)))]``
  (the cross-entropy of telling real from fake: ``-log sigma(D(x)) - log(1 - sigma(D(G(z))))``);
- minimax generator loss ``L_G = -E[softplus(D(G(z)))] = E[log(1 - sigma(D(G(z))))]``, the game as written,
  whose gradient vanishes when D confidently rejects the fakes (early in training);
- non-saturating generator loss ``L_G = E[softplus(-D(G(z)))] = -E[log sigma(D(G(z)))]`` (the paper's
  practical fix, used by DDGAN and LDDGAN: Xiao et al. 2022, eq. 6 of the LDDGAN paper).

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?", eq. 9) penalises
the discriminator's gradient on real data, ``(gamma / 2) E ||grad_x D(x)||^2``, which keeps D from
building steep walls around the data and lets the game settle. Lazy regularisation (Karras et al. 2020,
StyleGAN2 section 3.1) adds it only every ``lazy_reg`` steps; DDGAN adds it, unscaled, to the
discriminator loss of those steps, and so does :class:`GAN` here.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..train.plan import OptimizerSpec, Phase
from .base import Method

GENERATOR_LOSSES = ("non-saturating", "minimax")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``E[softplus(-D(real))] + E[softplus(D(fake))]``: the discriminator's cross-entropy."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss on the discriminator's logits for its samples: ``"non-saturating"``
    ``E[softplus(-D(fake))]`` or ``"minimax"`` ``-E[softplus(D(fake))]`` (module docstring)."""
    _validate.choice("kind", kind, GENERATOR_LOSSES)
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x D(x)||^2`` over the real inputs ``real`` (which must require grad and have produced
    ``real_logits``), with the graph kept so the penalty itself can be back-propagated. Multiply by
    ``gamma / 2`` for Mescheder et al.'s R1."""
    if not real.requires_grad:
        raise ValueError("r1_penalty needs the real inputs with requires_grad=True before D was applied")
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@contextlib.contextmanager
def no_weight_grads(module: nn.Module):
    """Build graph through ``module`` without gradients for its weights (they flow to its inputs only),
    as GAN code does for D during the generator's step; the flags are restored on exit."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def check_gan_settings(r1_gamma: float, lazy_reg: int) -> None:
    if r1_gamma < 0:
        raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
    _validate.positive_int("lazy_reg", lazy_reg)


class GAN(Method):
    """A plain GAN on any data: ``generator(z) -> x`` and ``discriminator(x) -> [B]`` logits.

    Two optimisers (``"G"``, ``"D"``; Adam betas (0.5, 0.9) unless the learning rates are given as
    ``None``, which takes ``TrainConfig``'s) and two phases per step, D then G. ``generator_loss`` picks the
    non-saturating or the minimax generator loss; ``r1_gamma > 0`` adds ``(r1_gamma / 2) E||grad D(x)||^2``
    to D's loss every ``lazy_reg`` steps. The EMA (if the trainer keeps one) averages the generator.
    """

    ema_networks = ("generator",)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, z_dim: int, *,
                 generator_loss: str = "non-saturating", r1_gamma: float = 0.0, lazy_reg: int = 1,
                 lr_g: float | None = 2e-4, lr_d: float | None = 2e-4, betas: tuple = (0.5, 0.9)):
        super().__init__()
        _validate.positive_int("z_dim", z_dim)
        _validate.choice("generator_loss", generator_loss, GENERATOR_LOSSES)
        check_gan_settings(r1_gamma, lazy_reg)
        self.generator, self.discriminator, self.z_dim = generator, discriminator, z_dim
        self.generator_loss, self.r1_gamma, self.lazy_reg = generator_loss, r1_gamma, lazy_reg
        self.lr_g, self.lr_d, self.betas = lr_g, lr_d, tuple(betas)

    def optimizers(self) -> list[OptimizerSpec]:
        return [OptimizerSpec("G", ("generator",), lr=self.lr_g, betas=self.betas),
                OptimizerSpec("D", ("discriminator",), lr=self.lr_d, betas=self.betas)]

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), Phase("G", "G")]

    def draw_z(self, n: int, device, generator=None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator, device=device)

    def phase_loss(self, phase: str, x0, *, step: int, progress: float, generator=None, **cond) -> dict:
        z = self.draw_z(x0.shape[0], x0.device, generator)
        if phase == "D":
            with torch.no_grad():
                fake = self.generator(z)
            real = x0.detach().requires_grad_(self.r1_gamma > 0 and step % self.lazy_reg == 0)
            real_logits = self.discriminator(real)
            terms = {"adv": discriminator_loss(real_logits, self.discriminator(fake))}
            if real.requires_grad:
                terms["r1"] = self.r1_gamma / 2 * r1_penalty(real_logits, real)
        else:
            with no_weight_grads(self.discriminator):
                terms = {"adv": generator_loss(self.discriminator(self.generator(z)), self.generator_loss)}
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}

    def loss(self, x0, *, generator=None, **cond) -> dict:
        """The generator's loss (for a single evaluation outside the trainer)."""
        return self.phase_loss("G", x0, step=0, progress=0.0, generator=generator)

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """``n`` samples ``G(z)``, one network call (``steps`` must be None or 1)."""
        if steps not in (None, 1):
            raise ValueError(f"a GAN samples in one step; got steps={steps!r}")
        n = n_or_shape if isinstance(n_or_shape, int) else n_or_shape[0]
        _validate.positive_int("n", n)
        device = next(self.generator.parameters()).device
        return self.generator(self.draw_z(n, device, generator))


__all__ = ["GAN", "GENERATOR_LOSSES", "discriminator_loss", "generator_loss", "no_weight_grads", "r1_penalty"]
