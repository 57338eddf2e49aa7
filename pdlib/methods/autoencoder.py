"""Training the autoencoder of a latent model: L1, perceptual and patch-adversarial losses, optional KL.

LDDGAN (Trinh & Hamagami 2024, section 4.2) trains its autoencoder as VQGAN does (Esser et al. 2021,
"Taming Transformers", section 3.2) and as latent diffusion trains its KL autoencoders (Rombach et al.
2022, appendix G): a pixel L1 loss, a perceptual loss (LPIPS, Zhang et al. 2018) and a patch-based
adversarial loss against a PatchGAN discriminator (Isola et al. 2017), which keep reconstructions sharp
where L1 alone blurs them; without a KL penalty by default (the LDDGAN ablation, Table 7).

Two phases, as in the two optimiser steps of taming-transformers' ``VQLPIPSWithDiscriminator``:

- ``"AE"`` updates the autoencoder with
  ``L1(x, x_rec) + perceptual_weight * P(x_rec, x) + adv_weight * L_G + kl_weight * KL``,
  ``L_G = -mean D(x_rec)`` (the generator side of the hinge GAN loss, taming's default);
- ``"D"`` updates the discriminator with the hinge loss (Lim & Ye 2017, "Geometric GAN")
  ``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))`` on reconstructions made without gradient.

VQGAN writes the classic GAN loss in its paper and uses the hinge loss in its code; it also scales L_G by
an adaptive weight (the ratio of the gradient norms of the reconstruction and GAN losses at the last
decoder layer). Here the GAN weight is the fixed ``adv_weight``.

Like VQGAN's ``disc_start``, the adversarial terms are zero before step ``adv_start``: the AE phase leaves
L_G out and the D phase returns ``0 * D`` loss, a zero loss that still has a gradient (the trainer needs
one), so Adam without weight decay leaves the discriminator exactly unchanged.

Loss scaling: L1 and the perceptual distance are means over pixels (per image for the perceptual one)
and the batch. Latent diffusion sums L1 over pixels (adding the per-image LPIPS at every pixel) and the
KL over latent elements; to keep its weights' meaning (``kl_weight = 1e-6``) with the pixel means used
here, the KL of each image, summed over its latent elements, is divided by the number of values in the
image (``C * H * W``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..nets.autoencoder import AutoEncoder, gaussian_sample
from ..perceptual import LPIPS, FeatureDistance
from ..perceptual.lpips import RANGE_SLACK
from ..train.frozen import Frozen
from ..train.plan import OptimizerSpec, Phase
from .base import Method

ADAM_BETAS = (0.5, 0.9)
"""Adam betas of both optimisers (taming-transformers' ``configure_optimizers``)."""


def diagonal_gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per example, summed over all other dimensions:
    ``0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)`` (Kingma & Welling 2014, appendix B; latent
    diffusion's ``DiagonalGaussianDistribution.kl``). Returns ``Tensor[B]``."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def _rgb_input(perceptual) -> bool:
    """Whether ``perceptual`` takes 3-channel images: pdlib's LPIPS does, a FeatureDistance takes the
    channels of its feature network, any other callable is given the images as they are."""
    if isinstance(perceptual, LPIPS):
        return True
    return isinstance(perceptual, FeatureDistance) and perceptual.feature_net.in_channels == 3


class AutoEncoderTraining(Method):
    """Train ``autoencoder`` (a ``pdlib.nets.AutoEncoder``) against ``discriminator`` (e.g. a
    ``pdlib.nets.autoencoder.PatchDiscriminator``) on images in [-1, 1] (module docstring).

    Args:
        perceptual: a callable ``(pred, target) -> Tensor[B]`` on images in [-1, 1], e.g.
            ``pdlib.perceptual.LPIPS("vgg")``, or None for no perceptual term. An ``nn.Module`` is wrapped
            in ``pdlib.train.Frozen`` (out of optimisers and checkpoints). One-channel images are repeated
            to three channels for an ``LPIPS`` (or a ``FeatureDistance`` on 3-channel features). The
            reconstruction is clamped to ``[-1 - RANGE_SLACK, 1 + RANGE_SLACK]`` = [-2, 2] first, the range
            pdlib's perceptual distances accept: an untrained decoder overshoots it (L1 pulls it back).
        l1_weight, perceptual_weight, adv_weight, kl_weight: weights of the AE phase's terms (``kl_weight``
            only counts for a KL autoencoder).
        adv_start: the first step with adversarial terms (taming's ``disc_start``).
        data_shape: ``(C, H, W)`` of the training images, for ``sample(n)`` by count (else set by the first loss).

    ``optimizers()``: ``"AE"`` over the autoencoder and ``"D"`` over the discriminator, Adam with betas
    (0.5, 0.9) and no weight decay; the learning rate is ``TrainConfig.lr``. ``phases()``: ``"AE"``, then
    ``"D"``, every step. The EMA averages the autoencoder only. Labels (``y``) are accepted and ignored.
    """

    ema_networks = ("autoencoder",)

    def __init__(self, autoencoder: AutoEncoder, discriminator: nn.Module, perceptual: Callable | None = None,
                 l1_weight: float = 1.0, perceptual_weight: float = 1.0, adv_weight: float = 0.1,
                 kl_weight: float = 1e-6, adv_start: int = 0, data_shape: tuple | None = None):
        super().__init__()
        if not isinstance(autoencoder, AutoEncoder):
            raise TypeError(f"autoencoder must be a pdlib AutoEncoder, got {type(autoencoder).__name__}")
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
        if perceptual is not None and not callable(perceptual):
            raise TypeError(f"perceptual must be a callable (pred, target) -> Tensor[B] or None, "
                            f"got {type(perceptual).__name__}")
        for name, value in [("l1_weight", l1_weight), ("perceptual_weight", perceptual_weight),
                            ("adv_weight", adv_weight), ("kl_weight", kl_weight)]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(adv_start, bool) or not isinstance(adv_start, int) or adv_start < 0:
            raise ValueError(f"adv_start must be an int >= 0, got {adv_start!r}")
        self.autoencoder, self.discriminator = autoencoder, discriminator
        inner = perceptual.net if isinstance(perceptual, Frozen) else perceptual
        self.perceptual_rgb = _rgb_input(inner)
        if isinstance(perceptual, nn.Module) and not isinstance(perceptual, Frozen) \
                and next(perceptual.parameters(), None) is not None:
            perceptual = Frozen(perceptual)
        self.perceptual = perceptual
        self.l1_weight, self.perceptual_weight = float(l1_weight), float(perceptual_weight)
        self.adv_weight, self.kl_weight, self.adv_start = float(adv_weight), float(kl_weight), adv_start
        # shape of one training image (for sampling by count), else set by the first loss
        self.data_shape = None if data_shape is None else tuple(data_shape)

    def optimizers(self) -> list[OptimizerSpec]:
        return [OptimizerSpec("AE", ("autoencoder",), betas=ADAM_BETAS, weight_decay=0.0),
                OptimizerSpec("D", ("discriminator",), betas=ADAM_BETAS, weight_decay=0.0)]

    def phases(self) -> list[Phase]:
        return [Phase("AE", "AE"), Phase("D", "D")]

    # ----------------------------------------------------------------------------------------------
    def _reconstruct_for_training(self, x0: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_rec, kl)`` on unscaled latents; a KL autoencoder decodes a posterior draw (latent diffusion's
        ``sample_posterior=True``) and ``kl`` is the per-image KL divided by ``C * H * W``, else None."""
        ae = self.autoencoder
        ae.check_images(x0)
        if not ae.kl:
            return ae.decoder(ae.encoder(x0)), None
        mean, logvar = ae.encode_moments(x0)
        kl = diagonal_gaussian_kl(mean, logvar) / x0[0].numel()
        return ae.decoder(gaussian_sample(mean, logvar, generator)), kl

    def _perceptual(self, rec: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        rec = rec.clamp(-1.0 - RANGE_SLACK, 1.0 + RANGE_SLACK)
        if self.perceptual_rgb and x0.shape[1] == 1:
            rec, x0 = rec.expand(-1, 3, -1, -1), x0.expand(-1, 3, -1, -1)
        return self.perceptual(rec, x0).mean()

    def _ae_terms(self, x0: torch.Tensor, generator, adversarial: bool) -> dict:
        rec, kl = self._reconstruct_for_training(x0, generator)
        terms = {"l1": self.l1_weight * (rec - x0).abs().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual_weight * self._perceptual(rec, x0)
        if kl is not None:
            terms["kl"] = self.kl_weight * kl.mean()
        if adversarial:
            terms["adv"] = self.adv_weight * -self.discriminator(rec).mean()
        total = sum(terms.values())
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    def phase_loss(self, phase: str, x0: torch.Tensor, *, step: int, progress: float,
                   generator: torch.Generator | None = None, **cond) -> dict:
        """The loss of phase ``"AE"`` or ``"D"`` on images ``x0`` ``[B, C, H, W]`` at training step ``step``:
        ``{"loss", ...}`` with the weighted terms, detached (``l1``, ``perceptual``, ``kl``, ``adv`` for AE;
        ``d_real``, ``d_fake`` (the two hinge halves) for D). Before ``adv_start`` there is no ``adv`` and
        the D loss is zero."""
        _validate.choice("phase", phase, ("AE", "D"))
        self.data_shape = tuple(x0.shape[1:])
        adversarial = step >= self.adv_start
        if phase == "AE":
            return self._ae_terms(x0, generator, adversarial)
        self.autoencoder.check_images(x0)
        if not adversarial:
            return {"loss": 0.0 * self.discriminator(x0).mean()}
        with torch.no_grad():
            rec, _ = self._reconstruct_for_training(x0, generator)
        real, fake = self.discriminator(x0), self.discriminator(rec)
        terms = {"d_real": 0.5 * F.relu(1.0 - real).mean(), "d_fake": 0.5 * F.relu(1.0 + fake).mean()}
        return {"loss": terms["d_real"] + terms["d_fake"], **{k: v.detach() for k, v in terms.items()}}

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """The AE phase's reconstruction terms without the adversarial one (which needs the D phase):
        for training the autoencoder alone."""
        return self._ae_terms(x0, generator, adversarial=False)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` without gradient (the posterior mean for a KL autoencoder)."""
        return self.autoencoder(x)

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """The decoder applied to latents drawn from N(0, I): a VAE's sample (Kingma & Welling 2014), which is
        meaningful only for a KL autoencoder whose latents were pulled towards that prior. For the plain
        autoencoder LDDGAN uses it shows why a generative model of the latents is needed. ``n_or_shape`` is a
        count (the latent shape follows from the last training batch) or a full unscaled latent shape."""
        if isinstance(n_or_shape, int):
            if self.data_shape is None:
                raise ValueError("pass a full latent shape, or train before sampling by count")
            c, h, w = self.data_shape
            f = self.autoencoder.factor
            n_or_shape = (n_or_shape, self.autoencoder.latent_channels, h // f, w // f)
        device = next(self.autoencoder.parameters()).device
        return self.autoencoder.decoder(torch.randn(tuple(n_or_shape), generator=generator, device=device))


__all__ = ["ADAM_BETAS", "AutoEncoderTraining", "diagonal_gaussian_kl"]
