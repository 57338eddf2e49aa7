"""Dual diffusion: one network that predicts both x0 and eps, mixed per pixel by a learned weight.

Benny & Wolf (2022), "Dynamic dual-output diffusion models" (CVPR), the "Dual Diffusion" baseline of the
Cas-DM paper (An et al. 2024, "Bring metric functions into diffusion models", sections 3-4). The network
``net(x_t, t)`` returns ``2C + 1`` channels: a direct estimate x0' (C channels), a noise estimate eps'
(C channels) and one logit channel; ``r = sigmoid(logit)`` is a per-pixel weight in (0, 1) that says how
much to trust the direct x0' over the x0 implied by eps' (Ho et al. 2020, eq. 15). Training uses

- ``MSE(x0', x0) + MSE(eps', eps)``, the two regressions of DDPM's x0 and eps modes;
- ``L_mu = MSE(mu~(x0, x_t), r [mu(x0')]_sg + (1 - r) [mu(x0 from eps')]_sg)`` where mu is the mean of the
  forward posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, eq. 7; Cas-DM paper eq. 7) and ``[.]_sg`` stops the
  gradient, so the two branch means are constants and the only thing L_mu trains is r (Cas-DM paper eq. 12,
  the scheme it takes over from dual diffusion);
- optionally ``metric_weight * metric(x0', x0)``. Because x0' and eps' come out of the same network this
  term reaches the weights that make eps' as well. The Cas-DM paper blames that for its Table 1, where
  adding LPIPS to dual diffusion lowers the FID on CIFAR-10 and ImageNet 64 but raises it on CelebA-HQ and
  LSUN Bedroom, while Cas-DM + LPIPS improves on all four; Cas-DM (:mod:`pdlib.methods.casdm`) moves x0'
  into a second network whose losses do not reach the eps network.

Sampling is DDIM (or ancestral DDPM) from the r-mixed estimate ``x0_mix = r x0' + (1 - r) x0(eps')``; see
:func:`mix_x0` for why this is the same as mixing the two branches' step means (Cas-DM paper eqs. 11, 16-17).

This module also holds what Cas-DM shares with dual diffusion (:func:`mix_x0`,
:func:`posterior_mean_mix_loss`, :func:`metric_term`, :class:`MixedX0Method`); ``casdm`` imports them so
each formula has one home. Book chapter "Metric functions in diffusion: dual diffusion and Cas-DM".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import _validate
from ..diffusion import GaussianDiffusion
from .base import Method


# ------------------------------------------------------------------------------------------ shared helpers
def mix_x0(r: torch.Tensor, x0_direct: torch.Tensor, x0_from_eps: torch.Tensor) -> torch.Tensor:
    """The r-mixed clean-image estimate ``r * x0_direct + (1 - r) * x0_from_eps`` (r broadcast over channels).

    Why sampling from this one estimate is the mixing of the two branches' means (Cas-DM paper eq. 11, and
    eqs. 16-17 for DDIM): for a fixed x_t every step mean used here is affine in the x0 estimate,
    ``m(x0) = A_t x0 + B_t x_t`` with per-sample scalars A_t, B_t. For the DDPM posterior mean (eq. 7)
    ``A_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t)``; for DDIM (eq. 16, with eps re-derived from x0 through
    eq. 3) ``A_t = sqrt(abar_prev) - sqrt(1 - abar_prev - sigma_t^2) sqrt(abar_t) / sqrt(1 - abar_t)``. The
    eps-branch mean of eq. 17 is ``m`` evaluated at the x0 implied by eps' (eq. 8), because that x0 and eps'
    satisfy eq. 3 together. Hence, pixel by pixel,

        r m(x0_direct) + (1 - r) m(x0_from_eps) = A_t (r x0_direct + (1 - r) x0_from_eps) + B_t x_t
                                                = m(mix_x0(r, x0_direct, x0_from_eps)),

    so handing ``GaussianDiffusion.sample`` a model that returns this mix with ``parameterization="x0"``
    runs eq. 11 exactly (without clipping; with ``clip=True`` the mixed x0 is clamped to [-1, 1] and eps is
    re-derived from it, as dual diffusion samples).
    """
    return r * x0_direct + (1 - r) * x0_from_eps


def posterior_mean_mix_loss(process: GaussianDiffusion, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                            x0_direct: torch.Tensor, x0_from_eps: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """L_mu, the loss that trains the mixing weight (Cas-DM paper eq. 12; Benny & Wolf 2022):

        L_mu = mean( (mu~(x0, x_t) - (r [mu(x0_direct)]_sg + (1 - r) [mu(x0_from_eps)]_sg))^2 ),

    where ``mu(.)`` is the mean of q(x_{t-1} | x_t, x0) (Ho et al. 2020, eq. 7; ``process.q_posterior``), with
    the true x0 for the target and each branch's x0 estimate for the two predictions. The branch means are
    detached, so gradient reaches only ``r``. Note ``mu(x0_from_eps)`` is the eps-form mean of eq. 9 (eq. 9 is
    eq. 7 with x0 replaced by eq. 8). The mean runs over every element (the per-pixel r broadcasts over C).
    """
    target = process.q_posterior(x0, xt, t)[0]
    mu_direct = process.q_posterior(x0_direct, xt, t)[0].detach()
    mu_eps = process.q_posterior(x0_from_eps, xt, t)[0].detach()
    return (target - (r * mu_direct + (1 - r) * mu_eps)).pow(2).mean()


def metric_term(metric: Callable, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The batch mean of ``metric(pred, target)``, which must return one value per sample (``Tensor[B]``)."""
    value = metric(pred, target)
    if not isinstance(value, torch.Tensor) or value.shape != (pred.shape[0],):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"metric(pred, target) must return a Tensor[B] with B = {pred.shape[0]}, got {shape}")
    return value.mean()


def check_weight(name: str, value) -> float:
    """A loss weight as a float; raises ``ValueError`` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_channels(who: str, output: torch.Tensor, xt: torch.Tensor, expected: int, layout: str) -> None:
    """Raise ``ValueError`` unless a network output is ``[B, expected, *spatial of xt]``."""
    _validate.tensor(f"{who} output", output, min_ndim=2)
    want = (xt.shape[0], expected, *xt.shape[2:])
    if tuple(output.shape) != want:
        raise ValueError(f"{who} must output {layout} = {expected} channels for data with C = {xt.shape[1]} "
                         f"channels, i.e. shape {want}; got {tuple(output.shape)}. Build it with "
                         f"out_channels={expected} (e.g. UNet(in_channels={xt.shape[1]}, out_channels={expected}))")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element (DDPM's L_simple, Ho et al. 2020, eq. 14)."""
    return (a - b).pow(2).mean()


# ------------------------------------------------------------------------------------------ shared base
class MixedX0Method(Method):
    """What dual diffusion and Cas-DM have in common: the noising of a training batch, a ``predict(xt, t)``
    that returns the two x0 estimates and the mixing weight, and sampling from the r-mixed x0.

    Subclasses implement ``predict(xt, t, **cond) -> dict`` with at least ``"r"`` and ``"x0_mix"`` (the
    output of :func:`mix_x0`), and ``loss``.
    """

    def __init__(self, process: GaussianDiffusion, data_shape: tuple | None = None):
        super().__init__()
        if not isinstance(process, GaussianDiffusion):
            raise TypeError(f"process must be a GaussianDiffusion, got {type(process).__name__}")
        if float(process.alphas_cumprod[-1]) == 0.0:
            raise ValueError(f"{type(self).__name__} derives x0 from the eps prediction (Ho et al. 2020, eq. 15), "
                             "which is undefined where abar_t = 0; use a schedule without zero terminal SNR")
        self.process = process
        self.data_shape = None if data_shape is None else tuple(data_shape)

    def predict(self, xt: torch.Tensor, t, **cond) -> dict:
        raise NotImplementedError

    def forward(self, xt: torch.Tensor, t, **cond) -> torch.Tensor:
        """The r-mixed clean-image estimate x0_mix at (xt, t): what the sampler steps with."""
        return self.predict(xt, t, **cond)["x0_mix"]

    def _timesteps(self, t, xt: torch.Tensor) -> torch.Tensor:
        """``t`` (an int, a scalar tensor or a ``[B]`` tensor of 0-based indices) checked and shaped ``[B]``."""
        _validate.tensor("xt", xt, min_ndim=2)
        if isinstance(t, bool):
            raise TypeError("timesteps must be integer indices, got a bool")
        if isinstance(t, int):
            t = torch.full((xt.shape[0],), t, dtype=torch.long, device=xt.device)
        return self.process._check_t(t, xt).to(xt.device)

    @torch.no_grad()
    def mixing_weight(self, xt: torch.Tensor, t, **cond) -> torch.Tensor:
        """The per-pixel mixing weight r_t = sigmoid(logit) in (0, 1), shape ``[B, 1, *spatial]``, for noisy
        inputs ``xt`` at timesteps ``t`` (an int or ``[B]``); r near 1 trusts the direct x0 estimate, near 0
        the one implied by eps. Without gradient; put the method in eval mode first if its nets use dropout."""
        return self.predict(xt, t, **cond)["r"]

    def _noisy_batch(self, x0: torch.Tensor, generator: torch.Generator | None):
        """Draw ``t ~ U{0..T-1}`` and then ``eps ~ N(0, I)`` from ``generator`` (the order DDPM uses) and
        return ``(t, eps, x_t)`` with x_t from Ho et al. (2020), eq. 4."""
        _validate.tensor("x0", x0, min_ndim=2)
        self.data_shape = tuple(x0.shape[1:])
        t = torch.randint(0, self.process.T, (x0.shape[0],), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return t, eps, self.process.q_sample(x0, t, eps)

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None, sampler: str = "ddim",
               clip: bool = True, progress: bool = True, eta: float = 0.0, y: torch.Tensor | None = None,
               **kw) -> torch.Tensor:
        """Draw samples from x_T ~ N(0, I) with ``GaussianDiffusion.sample`` stepping with the r-mixed x0.

        ``sampler="ddim"`` (the papers' choice, Cas-DM section 4.2; ``eta`` as in Song et al. 2021) or
        ``"ddpm"`` (ancestral). ``steps`` respaces (the Cas-DM paper uses 100). The model handed to the
        sampler returns ``x0_mix`` with ``parameterization="x0"``; by the identity in :func:`mix_x0` each step
        equals mixing the x0-branch and eps-branch means with r_t (eqs. 11, 16-17). ``clip`` clamps the
        mixed x0 to [-1, 1] and re-derives eps from it. ``n_or_shape`` is a count (data shape from the last
        ``loss`` call, ``data_shape=`` or the network's ``data_shape``) or a full shape. ``y`` is passed to
        the networks as labels. Other keywords (``noise``, ``return_trajectory``, ``variance``, ``device``)
        go to ``GaussianDiffusion.sample``.
        """
        if isinstance(n_or_shape, int):
            if self.data_shape is None:
                raise ValueError("pass a full shape, or data_shape=..., before the first loss() call")
            shape = (n_or_shape, *self.data_shape)
        else:
            shape = tuple(n_or_shape)
        param = next(self.parameters(), None)
        kw.setdefault("device", param.device if param is not None else "cpu")
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            return self.process.sample(self, shape, sampler=sampler, steps=steps, eta=eta, parameterization="x0",
                                       generator=generator, progress=progress, clip=clip,
                                       model_kwargs=None if y is None else {"y": y}, **kw)
        finally:
            for m, mode in modes.items():
                m.training = mode


# ------------------------------------------------------------------------------------------ dual diffusion
class DualDiffusion(MixedX0Method):
    """Dual diffusion (Benny & Wolf 2022; the baseline of the Cas-DM paper), see the module docstring.

    Args:
        net: ``net(x_t, t, **cond) -> [B, 2C + 1, ...]``: x0' (channels ``0..C-1``), eps' (``C..2C-1``) and the
            mixing logit (channel ``2C``); e.g. ``UNet(in_channels=C, out_channels=2 * C + 1)``.
        process: the ``GaussianDiffusion`` (not ending at zero SNR: x0 is derived from eps').
        metric: optional ``metric(pred, target) -> Tensor[B]`` on images in [-1, 1] (e.g. LPIPS), applied to
            the direct estimate x0' and the true x0.
        metric_weight: its weight (>= 0; the term is used only when a metric is given and the weight is > 0).
        data_shape: shape of one example, for ``sample(n)`` before any ``loss`` call (default: the net's).

    ``loss`` returns ``{"loss", "x0", "eps", "mu"[, "metric"]}``: the total and the detached terms
    ``MSE(x0', x0)``, ``MSE(eps', eps)``, L_mu (:func:`posterior_mean_mix_loss`) and the weighted metric.
    """

    def __init__(self, net: nn.Module, process: GaussianDiffusion, metric: Callable | None = None,
                 metric_weight: float = 0.0, *, data_shape: tuple | None = None):
        super().__init__(process, data_shape or getattr(net, "data_shape", None))
        self.net = net
        self.metric = metric
        self.metric_weight = check_weight("metric_weight", metric_weight)

    def predict(self, xt: torch.Tensor, t, **cond) -> dict:
        """Run the network once at (xt, t) and split its output (Benny & Wolf 2022).

        Returns a dict: ``"x0"`` the direct estimate x0', ``"eps"`` the noise estimate eps', ``"x0_from_eps"``
        the x0 implied by eps' (Ho et al. 2020, eq. 15), ``"logit"`` and ``"r" = sigmoid(logit)`` (``[B, 1,
        ...]``), and ``"x0_mix"`` = :func:`mix_x0` of the two estimates. Gradients flow (nothing is detached).
        """
        t = self._timesteps(t, xt)
        c = xt.shape[1]
        out = self.net(xt, t, **cond)
        check_channels("DualDiffusion's net", out, xt, 2 * c + 1, "2C+1 (x0: C, eps: C, mixing logit: 1)")
        x0_direct, eps, logit = out[:, :c], out[:, c:2 * c], out[:, 2 * c:]
        x0_from_eps = self.process.predict_x0_from_eps(xt, t, eps)
        r = torch.sigmoid(logit)
        return {"x0": x0_direct, "eps": eps, "x0_from_eps": x0_from_eps, "logit": logit, "r": r,
                "x0_mix": mix_x0(r, x0_direct, x0_from_eps)}

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Draw t then eps from ``generator``, noise ``x0`` and return ``{"loss", "x0", "eps", "mu"[,
        "metric"]}`` (module docstring). The metric term, when used, reaches the whole shared network."""
        t, eps, xt = self._noisy_batch(x0, generator)
        p = self.predict(xt, t, **cond)
        terms = {"x0": mse(p["x0"], x0), "eps": mse(p["eps"], eps),
                 "mu": posterior_mean_mix_loss(self.process, x0, xt, t, p["x0"], p["x0_from_eps"], p["r"])}
        if self.metric is not None and self.metric_weight > 0:
            terms["metric"] = self.metric_weight * metric_term(self.metric, p["x0"], x0)
        total = sum(terms.values())
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


__all__ = ["DualDiffusion", "MixedX0Method", "metric_term", "mix_x0", "posterior_mean_mix_loss"]
