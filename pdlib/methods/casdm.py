"""Cas-DM: a cascade of an eps network and an x0 network, so metric losses never touch the eps network.

An et al. (2024), "Bring metric functions into diffusion models" (IJCAI), section 4. Not to be confused
with Ho et al.'s "Cascaded diffusion models" (2022), a chain of super-resolution diffusion models: "Cas-DM"
here is An et al.'s cascade of two networks for one image size.

- theta(x_t, t) -> eps' is a plain eps-mode DDPM network, trained only with ``L_theta = lambda_eps
  ||eps - eps'||^2`` (eqs. 12, 14).
- x0* = (x_t - sqrt(1 - abar_t) eps') / sqrt(abar_t) (eq. 8), computed from eps' *detached*: theta is cut
  out of phi's graph (section 4.2), so no phi-side loss, the metric included, reaches theta.
- phi(x0*, t) -> [x0', logit] (C + 1 channels), r_t = sigmoid(logit) per pixel (section 4.1).
- ``L_phi = lambda_x0 ||x0 - x0'||^2 + lambda_mu L_mu + lambda_metric metric(x0', x0)`` (eq. 15), with
  ``L_mu = || mu~ - (r [mu_{x0'}]_sg + (1 - r) [mu_{eps'}]_sg) ||^2`` (eq. 12; eq. 10 prints x0* where x0' is
  meant). The metric is the paper's LPIPS on images resized to 224 (eq. 13): pass e.g.
  ``pdlib.perceptual.LPIPS(resize=224, avgpool=True)``, wrapped in ``pdlib.train.Frozen``.
- Sampling: DDIM with the r_t-mix of the means from x0' and from eps' (eqs. 11, 16-17), which is the same
  as one DDIM step from the r-mixed x0 (:func:`pdlib.methods.dual.mix_x0`).

The pieces shared with dual diffusion (L_mu, the mix, sampling) live in :mod:`pdlib.methods.dual`.

**Clamping x0* before phi.** ``clip_x0_star=True`` (the default) clamps phi's *input* to [-1, 1]. Eq. 8
multiplies the error of eps' by sqrt((1 - abar_t) / abar_t): about 2e3 at the last step of a cosine
schedule with T = 100, 2e4 with T = 1000 and 8e4 with T = 4000 (the paper's setting), so unclamped x0* at
large t has entries in the hundreds or thousands, far outside the [-1, 1] range of the images phi is
meant to map it to; such inputs make phi's activations blow up (and overflow in half precision). The
clamp costs nothing else: x0* is detached, so no gradient passes through it either way, and the data lie
in [-1, 1], so only the amount by which x0* overshoots is lost, and that is noise. The eps branch of the
mix (``mu_{eps'}``, eq. 9, and ``x0_from_eps`` in sampling) keeps the unclamped x0*, as the paper's
equations have it; ``clip=True`` in ``sample`` clamps the mixed x0. ``clip_x0_star=False`` feeds the raw x0*.
Book chapter "Metric functions in diffusion: dual diffusion and Cas-DM".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..diffusion import GaussianDiffusion
from .dual import MixedX0Method, check_channels, check_weight, metric_term, mix_x0, mse, posterior_mean_mix_loss


class CasDM(MixedX0Method):
    """Cas-DM (An et al. 2024; module docstring): ``theta`` predicts eps, ``phi`` refines the x0 it implies.

    Args:
        theta: ``theta(x_t, t, **cond) -> eps'`` with the data's shape (e.g. ``UNet(in_channels=C)``).
        phi: ``phi(x0*, t) -> [B, C + 1, ...]``: x0' (channels ``0..C-1``) and the mixing logit (channel
            ``C``); e.g. ``UNet(in_channels=C, out_channels=C + 1)`` (phi_UNet) or ``FixResCNN`` (phi_Fix-Res).
            phi sees only x0* and t, as in the paper's Fig. 3; labels ``cond`` go to theta.
        process: the ``GaussianDiffusion`` (the paper: cosine, T = 4000); not ending at zero SNR.
        metric: optional ``metric(pred, target) -> Tensor[B]`` on images in [-1, 1], applied to (x0', x0).
        lambda_eps, lambda_x0, lambda_mu, lambda_metric: the loss weights of eqs. 14-15 (>= 0; the paper's
            defaults 1, 1, 1, 0.1). The metric term is used only when a metric is given and its weight is > 0.
        clip_x0_star: clamp phi's input x0* to [-1, 1] (default True; see the module docstring for why).
        data_shape: shape of one example, for ``sample(n)`` before any ``loss`` call (default: theta's).

    ``loss`` returns ``{"loss", "eps", "x0", "mu"[, "metric"]}``: ``"loss" = L_theta + L_phi`` (one backward
    pass trains both, since their graphs do not meet) and the weighted terms, detached.
    """

    def __init__(self, theta: nn.Module, phi: nn.Module, process: GaussianDiffusion, metric: Callable | None = None,
                 lambda_eps: float = 1.0, lambda_x0: float = 1.0, lambda_mu: float = 1.0,
                 lambda_metric: float = 0.1, *, clip_x0_star: bool = True, data_shape: tuple | None = None):
        super().__init__(process, data_shape or getattr(theta, "data_shape", None))
        self.theta, self.phi, self.metric = theta, phi, metric
        self.lambda_eps = check_weight("lambda_eps", lambda_eps)
        self.lambda_x0 = check_weight("lambda_x0", lambda_x0)
        self.lambda_mu = check_weight("lambda_mu", lambda_mu)
        self.lambda_metric = check_weight("lambda_metric", lambda_metric)
        self.clip_x0_star = bool(clip_x0_star)

    def predict(self, xt: torch.Tensor, t, **cond) -> dict:
        """Run the cascade once at (xt, t); the one place where its formulas are written (loss and sampling
        both call this).

        Returns a dict: ``"eps"`` = eps' = theta(xt, t) (with theta's graph); ``"x0_star"`` = x0* from the
        *detached* eps' (eq. 8, unclamped); ``"phi_input"`` = what phi saw (x0* clamped to [-1, 1] when
        ``clip_x0_star``); ``"x0"`` = x0' and ``"logit"`` from phi; ``"r"`` = sigmoid(logit), ``[B, 1, ...]``;
        ``"x0_mix"`` = r x0' + (1 - r) x0* (:func:`pdlib.methods.dual.mix_x0`).
        """
        t = self._timesteps(t, xt)
        c = xt.shape[1]
        eps = self.theta(xt, t, **cond)
        check_channels("CasDM's theta", eps, xt, c, "C (the noise eps')")
        x0_star = self.process.predict_x0_from_eps(xt, t, eps.detach())  # eq. 8; theta leaves phi's graph here
        phi_input = x0_star.clamp(-1, 1) if self.clip_x0_star else x0_star
        out = self.phi(phi_input, t)
        check_channels("CasDM's phi", out, xt, c + 1, "C+1 (x0': C, mixing logit r_t: 1)")
        x0, logit = out[:, :c], out[:, c:]
        r = torch.sigmoid(logit)
        return {"eps": eps, "x0_star": x0_star, "phi_input": phi_input, "x0": x0, "logit": logit, "r": r,
                "x0_mix": mix_x0(r, x0, x0_star)}

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Draw t then eps from ``generator``, noise ``x0`` and return ``{"loss", "eps", "x0", "mu"[,
        "metric"]}`` with ``"eps"`` = L_theta (eq. 14) and the others the weighted parts of L_phi (eq. 15)."""
        t, eps, xt = self._noisy_batch(x0, generator)
        p = self.predict(xt, t, **cond)
        terms = {"eps": self.lambda_eps * mse(p["eps"], eps),
                 "x0": self.lambda_x0 * mse(p["x0"], x0),
                 "mu": self.lambda_mu * posterior_mean_mix_loss(self.process, x0, xt, t, p["x0"], p["x0_star"],
                                                                p["r"])}
        if self.metric is not None and self.lambda_metric > 0:
            terms["metric"] = self.lambda_metric * metric_term(self.metric, p["x0"], x0)
        total = sum(terms.values())
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


__all__ = ["CasDM"]
