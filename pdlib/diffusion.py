"""Discrete Gaussian diffusion: forward process, posterior, parameterisations and samplers.

One object owns the process math; each method is one equation (book chapters "DDPM" and "DDIM and
fast sampling"). Timesteps are 0-based: index ``t`` is the papers' step ``t + 1``. The constants
are float64 and cast to the data's dtype and device when gathered.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from . import _validate
from .progress import progress_bar
from .schedules import space_timesteps

PARAMETERIZATIONS = ("eps", "x0", "v")
SAMPLERS = ("ddpm", "ddim")
#: ``sample`` warns when one deterministic step multiplies an eps error by more than this (see
#: ``GaussianDiffusion.eps_error_gain``); 10 flags cosine T=100 with 20 DDIM steps (gain ~160), not the
#: linear T=1000 schedule with 50 steps (gain ~0.2).
EPS_GAIN_WARNING = 10.0


class GaussianDiffusion:
    """The process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) defined by ``betas`` (Ho et al. 2020).

    Attributes ``T``, ``betas``, ``alphas``, ``alphas_cumprod`` and ``alphas_cumprod_prev`` are float64.
    ``timestep_map`` maps this process's indices to those of the process it was respaced from.
    """

    def __init__(self, betas: torch.Tensor, timestep_map: list[int] | None = None):
        _validate.tensor("betas", betas, ndim=1)
        betas = betas.detach().to("cpu", torch.float64)
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.T = len(betas)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        # beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t   (Ho et al. 2020, eq. 7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.timestep_map = list(range(self.T)) if timestep_map is None else list(timestep_map)

    def __repr__(self) -> str:
        return f"GaussianDiffusion(T={self.T}, abar_T-1={self.alphas_cumprod[-1].item():.3g})"

    # ------------------------------------------------------------------ helpers
    def _check_t(self, t: torch.Tensor, x: torch.Tensor, *, allow_minus_one: bool = False) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, device=x.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be an integer tensor of 0-based indices, got {t.dtype}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"timesteps must have shape [B]=({x.shape[0]},), got {tuple(t.shape)}")
        low = -1 if allow_minus_one else 0
        if len(t) and (int(t.min()) < low or int(t.max()) > self.T - 1):
            raise ValueError(f"timesteps must lie in [{low}, {self.T - 1}], got [{int(t.min())}, {int(t.max())}]")
        return t

    def _gather(self, arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """arr[t] as x's dtype/device, shaped [B, 1, ..., 1] to broadcast over x."""
        out = arr.to(x.device)[t.to(x.device)].to(x.dtype)
        return out.reshape(-1, *([1] * (x.ndim - 1)))

    @staticmethod
    def _noise_like(x: torch.Tensor, noise, generator) -> torch.Tensor:
        """``noise`` checked to have x's shape, or fresh N(0, I) noise drawn from ``generator``."""
        if noise is None:
            return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if noise.shape != x.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from the data shape {tuple(x.shape)}")
        return noise

    def _abar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """abar_t with abar_{-1} = 1 (the clean data), shaped to broadcast over x."""
        padded = torch.cat([self.alphas_cumprod, self.alphas_cumprod.new_ones(1)])
        return self._gather(padded, torch.where(t < 0, self.T, t), x)

    # ------------------------------------------------------------ forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 *, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps  (Ho et al. 2020, eq. 4)."""
        _validate.tensor("x0", x0, min_ndim=2)
        t = self._check_t(t, x0)
        noise = self._noise_like(x0, noise, generator)
        abar = self._gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0)  (Ho et al. 2020, eqs. 6-7).

        mean = sqrt(abar_{t-1}) beta_t/(1-abar_t) x_0 + sqrt(alpha_t)(1-abar_{t-1})/(1-abar_t) x_t.
        The log-variance at t = 0 (where the variance is 0) uses the value at t = 1, as improved
        diffusion does; no noise is drawn there anyway.
        """
        t = self._check_t(t, xt)
        b = self._gather(self.betas, t, xt)
        abar = self._gather(self.alphas_cumprod, t, xt)
        abar_prev = self._gather(self.alphas_cumprod_prev, t, xt)
        alpha = self._gather(self.alphas, t, xt)
        mean = abar_prev.sqrt() * b / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * xt
        variance = self._gather(self.posterior_variance, t, xt)
        clipped = self.posterior_variance.clone()
        if self.T > 1:
            clipped[0] = clipped[1]
        log_variance = self._gather(clipped.log(), t, xt)
        return mean, variance, log_variance

    # ---------------------------------------------------------- parameterisations
    def predict_x0_from_eps(self, xt, t, eps):
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (Ho et al. 2020, eq. 15)."""
        t = self._check_t(t, xt)
        abar = self._gather(self.alphas_cumprod, t, xt)
        return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps_from_x0(self, xt, t, x0):
        """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
        t = self._check_t(t, xt)
        abar = self._gather(self.alphas_cumprod, t, xt)
        return (xt - abar.sqrt() * x0) / (1 - abar).sqrt()

    def velocity(self, x0, eps, t):
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  (Salimans & Ho 2022, sec. 4)."""
        t = self._check_t(t, x0)
        abar = self._gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * eps - (1 - abar).sqrt() * x0

    def predict_x0_from_v(self, xt, t, v):
        """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
        t = self._check_t(t, xt)
        abar = self._gather(self.alphas_cumprod, t, xt)
        return abar.sqrt() * xt - (1 - abar).sqrt() * v

    def predict_eps_from_v(self, xt, t, v):
        """eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t."""
        t = self._check_t(t, xt)
        abar = self._gather(self.alphas_cumprod, t, xt)
        return abar.sqrt() * v + (1 - abar).sqrt() * xt

    def target(self, x0, eps, t, parameterization: str):
        """The regression target of a network that predicts ``parameterization`` (eps, x0 or v)."""
        _validate.choice("parameterization", parameterization, PARAMETERIZATIONS)
        if parameterization == "eps":
            return eps
        if parameterization == "x0":
            return x0
        return self.velocity(x0, eps, t)

    def split_prediction(self, xt, t, output, parameterization: str, clip: bool = False):
        """Turn a network output into ``(eps, x0)``. With ``clip``, x0 is clamped to [-1, 1] and
        eps re-derived from the clamped x0, so the two stay consistent with x_t."""
        _validate.choice("parameterization", parameterization, PARAMETERIZATIONS)
        if parameterization == "eps":
            eps, x0 = output, self.predict_x0_from_eps(xt, t, output)
        elif parameterization == "x0":
            eps, x0 = self.predict_eps_from_x0(xt, t, output), output
        else:
            eps, x0 = self.predict_eps_from_v(xt, t, output), self.predict_x0_from_v(xt, t, output)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = self.predict_eps_from_x0(xt, t, x0)
        return eps, x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t), float64, shape [B] (Kingma et al. 2021)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point:
            raise TypeError("timesteps must be an integer tensor")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.T - 1):
            raise ValueError(f"timesteps must lie in [0, {self.T - 1}]")
        abar = self.alphas_cumprod[t.cpu()]
        return abar / (1 - abar)

    # --------------------------------------------------------------- sampler steps
    def ddpm_step(self, xt, t, eps, noise=None, variance: str = "small", clip: bool = False,
                  *, x0=None, generator: torch.Generator | None = None):
        """One ancestral step x_t -> x_{t-1} ~ N(mu~(x0_hat, x_t), sigma_t^2 I)  (Ho et al. 2020, Alg. 2).

        ``variance="small"`` uses sigma^2 = beta~_t, ``"large"`` uses beta_t. No noise is added where
        t == 0. Pass ``x0`` when the network predicted it directly (needed where abar_t = 0).
        """
        _validate.choice("variance", variance, ("small", "large"))
        t = self._check_t(t, xt)
        if x0 is None:
            x0 = self.predict_x0_from_eps(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, var, _ = self.q_posterior(x0, xt, t)
        if variance == "large":
            var = self._gather(self.betas, t, xt)
        noise = self._noise_like(xt, noise, generator)
        nonzero = (t > 0).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
        return mean + nonzero * var.sqrt() * noise

    def ddim_step(self, xt, t, t_prev, eps, eta: float = 0.0, noise=None, clip: bool = False,
                  *, x0=None, generator: torch.Generator | None = None):
        """One DDIM step x_t -> x_{t_prev}  (Song et al. 2021, eq. 12).

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, with
        sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev). ``t_prev = -1``
        is the final step to abar = 1. With ``clip`` the clamped x0 is used and eps is re-derived.
        """
        t = self._check_t(t, xt)
        t_prev = self._check_t(t_prev, xt, allow_minus_one=True)
        if bool((t_prev >= t).any()):
            raise ValueError("t_prev must be smaller than t")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if x0 is None:
            x0 = self.predict_x0_from_eps(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        if clip or eps is None:
            eps = self.predict_eps_from_x0(xt, t, x0)
        abar, abar_prev = self._abar(t, xt), self._abar(t_prev, xt)
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
        out = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            out = out + sigma * self._noise_like(xt, noise, generator)
        return out

    def eps_error_gain(self, t: int, t_prev: int) -> float:
        """How much a deterministic DDIM step t -> t_prev (eta = 0, no clipping) multiplies an error
        delta in the predicted eps: x_prev changes by
        ``(sqrt(abar_prev) sqrt(1 - abar_t) / sqrt(abar_t) - sqrt(1 - abar_prev)) delta``.
        Near zero SNR (abar_t -> 0) the x0 estimate divides by sqrt(abar_t), and a long jump to a
        t_prev with much larger abar carries that blow-up into the sample."""
        abar = float(self.alphas_cumprod[t])
        abar_prev = 1.0 if t_prev < 0 else float(self.alphas_cumprod[t_prev])
        if abar == 0.0:
            return float("inf")
        return abs((abar_prev * (1 - abar) / abar) ** 0.5 - (1 - abar_prev) ** 0.5)

    # --------------------------------------------------------------- respacing
    def respace(self, spec) -> "GaussianDiffusion":
        """A shorter process on the kept steps of ``space_timesteps(T, spec)``, with betas recomputed
        from the kept abar values (Nichol & Dhariwal 2021, sec. 4). ``timestep_map`` gives the
        original index of each kept step, which is what the network must be called with."""
        kept = space_timesteps(self.T, spec)
        abar = self.alphas_cumprod[kept]
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return GaussianDiffusion(1 - abar / prev, [self.timestep_map[k] for k in kept])

    # --------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, model: Callable, shape, *, sampler: str = "ddpm", steps=None, eta: float = 0.0,
               parameterization: str = "eps", generator: torch.Generator | None = None,
               progress: bool = True, return_trajectory: bool = False, clip: bool = False,
               variance: str = "small", noise: torch.Tensor | None = None, device=None,
               model_kwargs: dict | None = None):
        """Draw samples by running the reverse process from x_T ~ N(0, I).

        ``model(x, t, **model_kwargs)`` is called with the original 0-based timesteps and predicts
        ``parameterization``. ``steps`` (an int, ``"ddimN"`` or section counts) respaces the
        process; ``None`` uses all ``T`` steps. ``sampler="ddpm"`` is ancestral sampling (with
        ``variance``), ``"ddim"`` uses explicit (t, t_prev) pairs and ``eta``. Returns the samples,
        or ``(samples, trajectory)`` with the trajectory ``[n_steps + 1, *shape]`` when asked.
        """
        _validate.choice("sampler", sampler, SAMPLERS)
        _validate.choice("parameterization", parameterization, PARAMETERIZATIONS)
        if device is None:
            param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
            device = param.device if param is not None else (noise.device if noise is not None else "cpu")
        if parameterization == "eps" and float(self.alphas_cumprod[-1]) == 0.0:
            raise ValueError("this schedule ends at zero SNR (abar = 0), where an eps prediction gives no "
                             "information about x0; train and sample with parameterization='v' or 'x0'")
        shape = tuple(shape)
        model_kwargs = model_kwargs or {}
        kept = list(range(self.T)) if steps is None else space_timesteps(self.T, steps)
        x = torch.randn(shape, generator=generator, device=device) if noise is None else noise.to(device)
        if tuple(x.shape) != shape:
            raise ValueError(f"noise shape {tuple(x.shape)} differs from shape {shape}")
        if sampler == "ddpm":
            process = self if steps is None else self.respace(steps)
            pairs = [(i, None) for i in reversed(range(process.T))]
        else:
            process = self
            pairs = list(zip(reversed(kept), reversed([-1] + kept[:-1])))
            gain = self.eps_error_gain(*pairs[0])
            if parameterization == "eps" and not clip and gain > EPS_GAIN_WARNING:
                warnings.warn(
                    f"DDIM with an eps-predicting model: the first step ({pairs[0][0]} -> {pairs[0][1]}) starts "
                    f"near zero SNR (abar = {float(self.alphas_cumprod[pairs[0][0]]):.2g}) and multiplies errors in "
                    f"eps by {gain:.3g}, so samples can explode. Remedies: clip=True for data in [-1, 1], more "
                    "steps, or a model trained with parameterization='v' (book chapter 'DDIM').", stacklevel=3)
        trajectory = [x.cpu()] if return_trajectory else None
        for i, i_prev in progress_bar(pairs, desc=f"{sampler} sampling", enabled=progress):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            t_model = torch.full_like(t, process.timestep_map[i])
            output = model(x, t_model, **model_kwargs)
            eps, x0 = process.split_prediction(x, t, output, parameterization, clip=clip)
            if sampler == "ddpm":
                x = process.ddpm_step(x, t, eps, variance=variance, x0=x0, generator=generator)
            else:
                t_prev = torch.full_like(t, i_prev)
                x = process.ddim_step(x, t, t_prev, eps, eta=eta, x0=x0, generator=generator)
            if return_trajectory:
                trajectory.append(x.cpu())
        return (x, torch.stack(trajectory)) if return_trajectory else x
