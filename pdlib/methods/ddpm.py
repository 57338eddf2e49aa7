"""DDPM as a method: the training loss and the sampler around any network ``net(x, t, **cond)``."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import _validate
from ..diffusion import PARAMETERIZATIONS, GaussianDiffusion
from ..guidance import classifier_free_guidance
from .base import Method


class DDPM(Method):
    """Denoising diffusion (Ho et al. 2020) with an eps, x0 or v target.

    ``loss`` is L_simple, the per-sample mean squared error to the target (Ho et al. 2020, eq. 14),
    averaged over the batch. With a ``metric(pred, target) -> [B]`` and ``metric_weight > 0`` the
    weighted metric between the predicted and the true x0 is added (the "DDPM (x0 + LPIPS)"
    baseline of the Cas-DM paper). ``cond_drop_prob`` replaces the label ``y`` by the network's
    ``null_class`` with that probability, which trains the unconditional model that classifier-free
    guidance needs (Ho & Salimans 2022, Algorithm 1).

    ``min_snr_gamma`` (e.g. 5) weights each sample's squared error by the min-SNR-gamma strategy of
    Hang et al. (2023, eq. 7 and Table 1): the x0-space weight ``min(SNR_t, gamma)`` written for the
    chosen target, i.e. ``min(SNR, gamma) / SNR`` for eps, ``min(SNR, gamma) / (SNR + 1)`` for v and
    ``min(SNR, gamma)`` for x0, where ``SNR_t = abar_t / (1 - abar_t)``. None (the default) is L_simple.
    """

    def __init__(self, net: nn.Module, process: GaussianDiffusion, parameterization: str = "eps",
                 metric: Callable | None = None, metric_weight: float = 0.0, *,
                 cond_drop_prob: float = 0.0, min_snr_gamma: float | None = None,
                 data_shape: tuple | None = None):
        super().__init__()
        _validate.choice("parameterization", parameterization, PARAMETERIZATIONS)
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must lie in [0, 1], got {cond_drop_prob}")
        if metric_weight < 0:
            raise ValueError(f"metric_weight must be >= 0, got {metric_weight}")
        self.net, self.process, self.parameterization = net, process, parameterization
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0 (or None for L_simple), got {min_snr_gamma}")
        self.metric, self.metric_weight, self.cond_drop_prob = metric, metric_weight, cond_drop_prob
        self.min_snr_gamma = min_snr_gamma
        self.data_shape = None if data_shape is None else tuple(data_shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        return self.net(x, t, **cond)

    def _drop_labels(self, y: torch.Tensor, generator) -> torch.Tensor:
        null = getattr(self.net, "null_class", None)
        if null is None:
            raise ValueError("cond_drop_prob > 0 needs a network with a null_class (e.g. MLP2D(num_classes=K))")
        drop = torch.rand(y.shape, generator=generator, device=y.device) < self.cond_drop_prob
        return torch.where(drop, torch.full_like(y, null), y)

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Draw t ~ U{0..T-1} and eps ~ N(0, I) per sample, return ``{"loss", "mse"[, "metric"]}``."""
        _validate.tensor("x0", x0, min_ndim=2)
        self.data_shape = tuple(x0.shape[1:])
        b = x0.shape[0]
        t = torch.randint(0, self.process.T, (b,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.cond_drop_prob > 0 and cond.get("y") is not None:
            cond = {**cond, "y": self._drop_labels(cond["y"], generator)}
        xt = self.process.q_sample(x0, t, eps)
        out = self.net(xt, t, **cond)
        target = self.process.target(x0, eps, t, self.parameterization)
        per_sample = (out - target).pow(2).flatten(1).mean(1)
        if self.min_snr_gamma is not None:
            per_sample = per_sample * self.loss_weight(t).to(per_sample.dtype)
        mse = per_sample.mean()
        terms = {"mse": mse}
        if self.metric is not None and self.metric_weight > 0:
            _, x0_hat = self.process.split_prediction(xt, t, out, self.parameterization)
            terms["metric"] = self.metric_weight * self.metric(x0_hat, x0).mean()
        total = sum(terms.values())
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The min-SNR-gamma weight of timesteps ``t`` for this target (all ones without ``min_snr_gamma``)."""
        abar = self.process.alphas_cumprod.to(t.device)[t]
        snr = abar / (1 - abar)
        if self.min_snr_gamma is None:
            return torch.ones_like(snr)
        clipped = snr.clamp(max=self.min_snr_gamma)
        return {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[self.parameterization]

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None,
               sampler: str = "ddpm", eta: float = 0.0, y: torch.Tensor | None = None,
               guidance_scale: float | None = None, guidance_rescale: float = 0.0, **kw) -> torch.Tensor:
        """Draw samples with ``GaussianDiffusion.sample``. ``n_or_shape`` is a count (the data shape
        is that of the training data, or the network's ``data_shape``) or a full shape. With labels ``y`` and a ``guidance_scale`` w,
        classifier-free guidance is applied (see ``pdlib.guidance``)."""
        if isinstance(n_or_shape, int):
            self.data_shape = self.data_shape or getattr(self.net, "data_shape", None)
            if self.data_shape is None:
                raise ValueError("pass a full shape, or data_shape=..., before the first loss() call")
            shape = (n_or_shape, *self.data_shape)
        else:
            shape = tuple(n_or_shape)
        model, kwargs = self.net, {}
        if y is not None and guidance_scale is not None:
            model = classifier_free_guidance(self.net, y, guidance_scale, self.parameterization,
                                             process=self.process, rescale=guidance_rescale)
        elif y is not None:
            kwargs = {"y": y}
        kw.setdefault("device", next(self.net.parameters()).device)  # a guided model is a plain function
        was_training = self.net.training
        self.net.eval()
        try:
            return self.process.sample(model, shape, sampler=sampler, steps=steps, eta=eta,
                                       parameterization=self.parameterization, generator=generator,
                                       model_kwargs=kwargs, **kw)
        finally:
            self.net.train(was_training)
