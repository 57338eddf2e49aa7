"""Denoising diffusion GANs: DDGAN, its wavelet variant, and LDDGAN with weighted learning.

DDGAN (Xiao et al. 2022, "Tackling the generative learning trilemma with denoising diffusion GANs";
LDDGAN paper section 3) keeps a Gaussian forward process with few, large steps (``beta_schedule("ddgan",
T)``, T = 2..8). For large steps the true denoising distribution ``q(x_{t-1} | x_t)`` is far from Gaussian,
so instead of a Gaussian with a learned mean it is modelled implicitly by a conditional GAN:

- the generator predicts a clean sample from the noisy one and a latent, ``x0' = G(x_t, t, z)``,
  z ~ N(0, I), and the fake ``x'_{t-1}`` is drawn from the forward posterior ``q(x_{t-1} | x_t, x0')``
  (no noise at the last step, where the posterior is the point x0');
- the discriminator ``D(x_{t-1}, t, x_t)`` tells real pairs of the forward chain from fake ones;
- losses as in :mod:`pdlib.methods.gan` (non-saturating G loss; R1 on the real ``x_{t-1}`` every
  ``lazy_reg`` steps, added to D's loss as the authors' code does);
- sampling runs the T steps from x_T ~ N(0, I) with a fresh z at every step: T network calls.

Wavelet DDGAN (Phung et al. 2023, "Wavelet diffusion models are fast and scalable image generators"):
the same on the four Haar subbands of the image (divided by 2), with an L1 reconstruction term of weight
1 on x0. LDDGAN (Trinh & Hamagami 2024): the same in the latent space of a frozen autoencoder, with the
reconstruction weight following *weighted learning*, an S-curve from about 1 to about 0 over training
(:func:`weighted_learning_weight`, eq. 9 of the paper).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..diffusion import GaussianDiffusion
from ..train.frozen import Frozen
from ..train.plan import OptimizerSpec, Phase
from ..wavelets import haar_dwt, haar_idwt
from .base import Method
from .gan import check_gan_settings, discriminator_loss, generator_loss, no_weight_grads, r1_penalty

SPACES = ("pixel", "wavelet")
WAVELET_SCALE = 2.0
"""Wavelet DDGAN divides the Haar coefficients by 2 so the LL band of [-1, 1] images stays in [-1, 1]."""


def weighted_learning_weight(epoch: float, num_epochs: float, delta: float = 6.0) -> float:
    """LDDGAN's reconstruction weight (Trinh & Hamagami 2024, eq. 9): ``1 - sigmoid(phi)`` with
    ``phi = -delta + 2 delta epoch / num_epochs``, an S-curve from ``1 - sigmoid(-delta)`` (0.9975 for
    delta = 6) at the start down to ``1 - sigmoid(delta)`` (0.0025) at the end, through 0.5 half way.
    (The extracted paper prints ``phi = -delta + delta E/N``; the authors' run goes from -delta to +delta.)
    ``epoch`` may be fractional (a training step divided by the steps per epoch)."""
    if num_epochs <= 0:
        raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
    if not 0 <= epoch <= num_epochs:
        raise ValueError(f"epoch must lie in [0, num_epochs={num_epochs}], got {epoch}")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    phi = -delta + 2.0 * delta * epoch / num_epochs
    return 1.0 - 1.0 / (1.0 + math.exp(-phi))


class DDGAN(Method):
    """Denoising diffusion GAN (module docstring) around ``generator(x_t, t, z=z)`` (predicts x0) and
    ``discriminator(x_prev, t, x_t) -> [B]``.

    ``process`` is a few-step ``GaussianDiffusion`` (``beta_schedule("ddgan", T)``). The generator's
    ``z_dim`` attribute sets the width of z. Two optimisers, ``"G"`` and ``"D"``, with DDGAN's CIFAR-10
    settings by default (Adam betas (0.5, 0.9), lr 1.6e-4 and 1.25e-4), and phases D then G each step.
    ``rec_weight`` adds ``rec_weight * |x0 - x0'|_1`` (mean) to the generator's loss, and ``rec_schedule``,
    a function of the training progress in [0, 1), gives that weight per step instead (LDDGAN's
    weighted learning). ``space="wavelet"`` runs the chain on the Haar subbands / 2 (the networks then
    see 4 C channels at half resolution); samples are returned as images.
    """

    ema_networks = ("generator",)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, process: GaussianDiffusion, *,
                 r1_gamma: float = 0.02, lazy_reg: int = 15, rec_weight: float | None = None,
                 rec_schedule: Callable[[float], float] | None = None, space: str = "pixel",
                 lr_g: float | None = 1.6e-4, lr_d: float | None = 1.25e-4, betas: tuple = (0.5, 0.9)):
        super().__init__()
        check_gan_settings(r1_gamma, lazy_reg)
        _validate.choice("space", space, SPACES)
        if rec_weight is not None and rec_schedule is not None:
            raise ValueError("give rec_weight (fixed) or rec_schedule (a function of progress), not both")
        if rec_weight is not None and rec_weight < 0:
            raise ValueError(f"rec_weight must be >= 0, got {rec_weight}")
        if not hasattr(generator, "z_dim"):
            raise TypeError("the generator needs a z_dim attribute (the width of its latent z)")
        self.generator, self.discriminator, self.process = generator, discriminator, process
        self.r1_gamma, self.lazy_reg, self.space = r1_gamma, lazy_reg, space
        self.rec_weight, self.rec_schedule = rec_weight, rec_schedule
        self.lr_g, self.lr_d, self.betas = lr_g, lr_d, tuple(betas)
        self.data_shape = None  # shape of one example in the diffusion space, set by the first loss

    def optimizers(self) -> list[OptimizerSpec]:
        return [OptimizerSpec("G", ("generator",), lr=self.lr_g, betas=self.betas),
                OptimizerSpec("D", ("discriminator",), lr=self.lr_d, betas=self.betas)]

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), Phase("G", "G")]

    # ------------------------------------------------------------- the diffusion space
    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data -> the space the chain runs in (identity, or Haar subbands / 2)."""
        return haar_dwt(x) / WAVELET_SCALE if self.space == "wavelet" else x

    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's space -> data (inverse of ``to_space``)."""
        return haar_idwt(x * WAVELET_SCALE) if self.space == "wavelet" else x

    # ------------------------------------------------------------------- the chain
    def draw_z(self, n: int, device, generator=None) -> torch.Tensor:
        return torch.randn(n, self.generator.z_dim, generator=generator, device=device)

    def posterior_sample(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """A draw of ``x_{t-1} ~ q(x_{t-1} | x_t, x0)`` (no noise where t == 0: the posterior is the point x0)."""
        mean, _, log_var = self.process.q_posterior(x0, xt, t)
        noise = torch.randn(xt.shape, generator=generator, device=xt.device, dtype=xt.dtype)
        nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
        return mean + nonzero * (0.5 * log_var).exp() * noise

    def real_pair(self, x0: torch.Tensor, t: torch.Tensor, generator=None):
        """``(x_{t-1}, x_t)`` from the forward chain: x_{t-1} ~ q(x_{t-1} | x0) (x0 itself at t == 0) and
        ``x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps``."""
        p = self.process
        t_prev = (t - 1).clamp(min=0)
        prev = torch.where((t == 0).reshape(-1, *([1] * (x0.ndim - 1))), x0,
                           p.q_sample(x0, t_prev, torch.randn(x0.shape, generator=generator, device=x0.device)))
        alpha = p.alphas.to(x0.device, x0.dtype)[t].reshape(-1, *([1] * (x0.ndim - 1)))
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return prev, alpha.sqrt() * prev + (1 - alpha).sqrt() * noise

    def reconstruction_weight(self, progress: float) -> float:
        if self.rec_schedule is not None:
            return float(self.rec_schedule(progress))
        return float(self.rec_weight or 0.0)

    def phase_loss(self, phase: str, x0, *, step: int, progress: float, generator=None, **cond) -> dict:
        """The loss of phase ``"D"`` (real vs fake pairs, R1 every ``lazy_reg`` steps) or ``"G"``
        (non-saturating, plus the weighted L1 reconstruction of x0); ``x0`` are data (images)."""
        x0 = self.to_space(x0)
        self.data_shape = tuple(x0.shape[1:])
        t = torch.randint(0, self.process.T, (x0.shape[0],), generator=generator, device=x0.device)
        prev, xt = self.real_pair(x0, t, generator)
        z = self.draw_z(x0.shape[0], x0.device, generator)
        if phase == "D":
            with torch.no_grad():
                fake = self.posterior_sample(self.generator(xt, t, z=z), xt, t, generator)
            prev = prev.detach().requires_grad_(self.r1_gamma > 0 and step % self.lazy_reg == 0)
            real_logits = self.discriminator(prev, t, xt)
            terms = {"adv": discriminator_loss(real_logits, self.discriminator(fake, t, xt))}
            if prev.requires_grad:
                terms["r1"] = self.r1_gamma / 2 * r1_penalty(real_logits, prev)
        else:
            x0_pred = self.generator(xt, t, z=z)
            fake = self.posterior_sample(x0_pred, xt, t, generator)
            with no_weight_grads(self.discriminator):
                terms = {"adv": generator_loss(self.discriminator(fake, t, xt))}
            weight = self.reconstruction_weight(progress)
            if weight > 0:
                terms["rec"] = weight * F.l1_loss(x0_pred, x0)
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}

    def loss(self, x0, *, generator=None, **cond) -> dict:
        """The generator's loss at the start of training (for a single evaluation outside the trainer)."""
        return self.phase_loss("G", x0, step=0, progress=0.0, generator=generator)

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None,
               return_trajectory: bool = False, clip: bool = False, **kw):
        """Posterior sampling (DDGAN's Algorithm, LDDGAN Algorithm 1): x_T ~ N(0, I), then for t = T-1..0
        ``x0' = G(x_t, t, z)`` with a fresh z and ``x_{t-1} ~ q(x_{t-1} | x_t, x0')``. T network calls;
        ``steps`` must be None or T (the generator was trained for these steps only). Returns data, clamped
        to [-1, 1] with ``clip`` (the inverse Haar transform and a decoder can overshoot); with
        ``return_trajectory`` also the chain ``[T + 1, B, ...]`` in the diffusion space. Other keywords
        (a config's sampler settings) are ignored."""
        if steps not in (None, self.process.T):
            raise ValueError(f"DDGAN samples with its {self.process.T} training steps; got steps={steps!r}")
        shape = self._shape(n_or_shape)
        device = next(self.generator.parameters()).device
        x = torch.randn(shape, generator=generator, device=device)
        chain = [x.cpu()]
        for i in reversed(range(self.process.T)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x = self.posterior_sample(self.generator(x, t, z=self.draw_z(shape[0], device, generator)), x, t, generator)
            chain.append(x.cpu())
        out = self.decode(x)
        out = out.clamp(-1.0, 1.0) if clip else out
        return (out, torch.stack(chain)) if return_trajectory else out

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's final state as data."""
        return self.from_space(x)

    def _shape(self, n_or_shape) -> tuple:
        if not isinstance(n_or_shape, int):
            return tuple(n_or_shape)
        _validate.positive_int("n", n_or_shape)
        shape = self.data_shape or getattr(self.generator, "data_shape", None)
        if shape is None:
            raise ValueError("pass a full shape (in the diffusion space), or train before sampling by count")
        return (n_or_shape, *shape)


class LDDGAN(DDGAN):
    """Latent DDGAN (Trinh & Hamagami 2024): DDGAN on the scaled latents of a frozen ``autoencoder``
    (``encode(x) -> z``, ``decode(z) -> x``, e.g. :class:`pdlib.nets.AutoEncoder` with its stored scale
    factor), with weighted learning by default: the generator's L1 reconstruction term (in latent space)
    is weighted by :func:`weighted_learning_weight` of the training progress (``delta``). Pass
    ``weighted_learning=False`` with ``rec_weight`` for a fixed weight, or neither for the adversarial
    loss alone (the paper's Table 6 rows). ``sample`` decodes the final latents through the decoder.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, process: GaussianDiffusion,
                 autoencoder: nn.Module, *, weighted_learning: bool = True, delta: float = 6.0,
                 rec_weight: float | None = None, **kw):
        if weighted_learning and rec_weight is not None:
            raise ValueError("weighted learning sets the reconstruction weight; rec_weight must be None with it")
        schedule = (lambda progress: weighted_learning_weight(progress, 1.0, delta)) if weighted_learning else None
        if weighted_learning:
            weighted_learning_weight(0.0, 1.0, delta)  # check delta now
        super().__init__(generator, discriminator, process, rec_weight=rec_weight, rec_schedule=schedule, **kw)
        self.autoencoder = autoencoder if isinstance(autoencoder, Frozen) else Frozen(autoencoder)
        self.weighted_learning, self.delta = weighted_learning, delta

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.autoencoder.encode(x)

    def from_space(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)


__all__ = ["DDGAN", "LDDGAN", "SPACES", "weighted_learning_weight"]
