"""Latent diffusion and flow matching, each with an optional latent perceptual loss (LPL).

Latent diffusion (Rombach et al. 2022, section 3): a diffusion model learns the distribution of the scaled
latents ``z = autoencoder.encode(x)`` of a frozen, pretrained autoencoder, and samples are decoded back to
images. :class:`LatentDiffusion` is ``DDPM`` on those latents (eps, v or x0 target).

Flow matching on the optimal-transport path (Lipman et al. 2023, section 4.1 with sigma_min = 0; the
rectified flow of Liu et al. 2023): data ``x0`` and noise ``eps ~ N(0, I)`` are joined by straight lines

    x_t = (1 - t) x0 + t eps,     t ~ U(0, 1),

whose velocity ``dx_t/dt = eps - x0`` is the network's regression target. Sampling integrates the learned
ODE ``dx/dt = v(x, t)`` from pure noise at t = 1 back to data at t = 0 with Euler steps.
:class:`FlowMatching` does this on data or, with an autoencoder, on scaled latents.

The latent perceptual loss (Berrada Ifriqi et al. 2025, "Boosting latent diffusion with perceptual
objectives", section 3) compares decoder features of the clean latent ``z0`` and of the network's estimate
``z0_hat`` of it, at high SNR only; the total loss is ``L = L_diff + w_LPL * L_LPL`` (their eq. 3 and after).
Any framework that writes ``x_t = alpha_t x0 + sigma_t eps`` gets ``z0_hat`` from its prediction (their
Table 1):

    DDPM-eps:  alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t),  z0_hat = (z_t - sigma_t eps_hat) / alpha_t
    DDPM-v:    same alpha_t, sigma_t,                               z0_hat = alpha_t z_t - sigma_t v_hat
    Flow-OT:   alpha_t = 1 - t,       sigma_t = t,                   z0_hat = z_t - t v_hat

with SNR ``alpha_t^2 / sigma_t^2``: ``abar_t / (1 - abar_t)`` for DDPM and ``((1 - t) / t)^2`` for the flow.
The loss itself (``pdlib.perceptual.LatentPerceptualLoss``) is any callable
``lpl(z_pred, z_target, snr=None) -> Tensor[B]`` that returns zero for samples below its SNR threshold.

Continuous time and the timestep embedding: the networks embed time with sinusoids of periods from 2 pi up
to 2 pi * 10000 (``pdlib.nets.embedding.timestep_embedding``), made for the integer steps 0..999 of DDPM.
Fed t in [0, 1] directly, every frequency but the highest few barely turns: the whole range t = 0..1 is one
integer step (at width 128 the embeddings of t = 0 and t = 1 lie 1.95 apart, those of the steps 500 and 1000
9.5 apart, out of a largest possible 16), and the embeddings of t = 0.50 and t = 0.51 are nearly identical
(0.02 apart; 6.5 after scaling). ``FlowMatching`` therefore calls the network with ``t * time_scale``
(1000 by default), so that t in [0, 1] spans what the steps 0..1000 span.

Book chapter "Latent perceptual loss".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import _validate
from ..diffusion import GaussianDiffusion
from ..guidance import classifier_free_guidance
from ..progress import progress_bar
from ..train.frozen import Frozen
from .base import Method
from .ddpm import DDPM

SAMPLERS = ("euler", "ddim")
"""Samplers ``FlowMatching.sample`` accepts; ``"ddim"`` is an alias of ``"euler"`` (see there)."""

DEFAULT_EULER_STEPS = 50
"""Euler steps of ``FlowMatching.sample`` when ``steps`` is None (the LPL paper samples with 50 steps)."""


# ------------------------------------------------------------------------ the optimal-transport path
def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` [B] (or a scalar) as x's dtype/device, shaped [B, 1, ..., 1] to broadcast over x."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must have shape [B] = [{x.shape[0]}] (or be a scalar), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def flow_interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point ``x_t = (1 - t) x0 + t eps`` of the optimal-transport path (Lipman et al. 2023, eq. 20 with
    sigma_min = 0) at continuous times ``t`` [B] in [0, 1]: data at t = 0, pure noise at t = 1."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {tuple(x0.shape)} and {tuple(eps.shape)}")
    t = _expand(t, x0)
    return (1 - t) * x0 + t * eps


def flow_velocity(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The path's velocity ``d x_t / dt = eps - x0`` (the same at every t): the regression target."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {tuple(x0.shape)} and {tuple(eps.shape)}")
    return eps - x0


def flow_predict_x0(xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The clean estimate ``x0_hat = x_t - t v`` from a velocity (the LPL paper's Table 1, Flow-OT row);
    exact for the true velocity ``eps - x0``."""
    return xt - _expand(t, xt) * v


def flow_snr(t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_t^2 / sigma_t^2 = ((1 - t) / t)^2`` of the path (infinite at t = 0,
    zero at t = 1), as float32."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return ((1 - t) / t) ** 2


def euler_sample(velocity: Callable, noise: torch.Tensor, steps: int, *, time_scale: float = 1.0,
                 model_kwargs: dict | None = None, progress: bool = True, return_trajectory: bool = False):
    """Integrate ``dx/dt = v(x, t)`` from ``x_1 = noise`` at t = 1 to t = 0 with ``steps`` Euler steps on the
    evenly spaced times ``t_i = 1 - i / steps``: ``x_{t - dt} = x_t - dt * v(x_t, t)``, ``dt = 1 / steps``.

    ``velocity(x, t * time_scale, **model_kwargs)`` is called with ``t`` a float tensor [B]. Returns the
    final state, or ``(x_0, trajectory)`` with the trajectory ``[steps + 1, *noise.shape]`` (on the CPU,
    from the noise to the result) when asked. ``steps`` network calls."""
    _validate.positive_int("steps", steps)
    model_kwargs = model_kwargs or {}
    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    trajectory = [x.cpu()] if return_trajectory else None
    for i in progress_bar(range(steps), desc="Euler sampling", enabled=progress):
        t_now, dt = float(times[i]), float(times[i] - times[i + 1])
        t = torch.full((x.shape[0],), t_now, device=x.device, dtype=x.dtype)
        v = velocity(x, t * time_scale, **model_kwargs)
        if v.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(v.shape)} for inputs of shape {tuple(x.shape)}")
        x = x - dt * v
        if return_trajectory:
            trajectory.append(x.cpu())
    return (x, torch.stack(trajectory)) if return_trajectory else x


# ------------------------------------------------------------------------------- shared pieces
def _check_autoencoder(autoencoder) -> nn.Module:
    """``autoencoder`` wrapped in ``Frozen`` (unless it already is); it needs ``encode`` and ``decode``."""
    inner = autoencoder.net if isinstance(autoencoder, Frozen) else autoencoder
    if not isinstance(inner, nn.Module) or not callable(getattr(inner, "encode", None)) \
            or not callable(getattr(inner, "decode", None)):
        raise TypeError("autoencoder must be an nn.Module with encode(x) -> z and decode(z) -> x "
                        f"(e.g. pdlib.nets.AutoEncoder), got {type(inner).__name__}")
    return autoencoder if isinstance(autoencoder, Frozen) else Frozen(autoencoder)


def _check_lpl(lpl, lpl_weight: float):
    """The loss to hold: ``None``, a plain callable, or an ``nn.Module`` wrapped in ``Frozen`` (its decoder is
    never trained by the method and is not part of the method's weights)."""
    if isinstance(lpl_weight, bool) or not isinstance(lpl_weight, (int, float)) or not math.isfinite(lpl_weight) \
            or lpl_weight < 0:
        raise ValueError(f"lpl_weight must be a finite number >= 0, got {lpl_weight!r}")
    if lpl is None:
        return None
    if not callable(lpl):
        raise TypeError(f"lpl must be a callable lpl(z_pred, z_target, snr=None) -> Tensor[B] "
                        f"(e.g. pdlib.perceptual.LatentPerceptualLoss), got {type(lpl).__name__}")
    if isinstance(lpl, nn.Module) and not isinstance(lpl, Frozen):
        return Frozen(lpl)
    return lpl


def _lpl_term(lpl, weight: float, z0_hat: torch.Tensor, z0: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
    """``weight * mean over the batch of lpl(z0_hat, z0, snr=snr)``: samples the loss gates out (SNR below
    its threshold) count as zeros, the paper's ``E[delta_{SNR >= tau} ...]``."""
    per_sample = lpl(z0_hat, z0, snr=snr)
    if not isinstance(per_sample, torch.Tensor) or per_sample.shape != (z0.shape[0],):
        shape = tuple(per_sample.shape) if isinstance(per_sample, torch.Tensor) else type(per_sample).__name__
        raise ValueError(f"lpl must return one loss per sample, Tensor[{z0.shape[0]}]; got {shape}")
    return weight * per_sample.mean()


def _drop_labels(net: nn.Module, y: torch.Tensor, prob: float, generator) -> torch.Tensor:
    """``y`` with each label replaced by the network's ``null_class`` with probability ``prob`` (as DDPM)."""
    null = getattr(net, "null_class", None)
    if null is None:
        raise ValueError("cond_drop_prob > 0 needs a network with a null_class (e.g. UNet(num_classes=K))")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < prob
    return torch.where(drop, torch.full_like(y, null), y)


def _check_output(out: torch.Tensor, target: torch.Tensor) -> None:
    if out.shape != target.shape:
        raise ValueError(f"the network returned shape {tuple(out.shape)}, but its target has shape "
                         f"{tuple(target.shape)}")


def _finish(z: torch.Tensor, decode, clip: bool | None, *, has_autoencoder: bool) -> torch.Tensor:
    """Samples as data: decoded (with an autoencoder) and clamped to [-1, 1] when ``clip`` says so
    (``None``: clamp decoded images, leave samples in the data space as they are)."""
    out = decode(z)
    if clip is None:
        clip = has_autoencoder
    return out.clamp(-1.0, 1.0) if clip else out


# ----------------------------------------------------------------------------------- the methods
class LatentDiffusion(DDPM):
    """DDPM on the scaled latents of a frozen autoencoder (latent diffusion), with an optional latent
    perceptual loss (Berrada Ifriqi et al. 2025, section 3; module docstring).

    Args:
        net: the denoiser ``net(z_t, t, **cond)`` on latents (e.g. a ``UNet`` with
            ``in_channels = autoencoder.latent_channels`` and ``image_size`` the latent side).
        process: the diffusion process (the LPL paper: the quadratic schedule, T = 1000).
        autoencoder: ``encode(x) -> z`` (scaled latents) and ``decode(z) -> x``, e.g.
            :class:`pdlib.nets.AutoEncoder`. It is wrapped in ``pdlib.train.Frozen``: never trained, no
            gradient reaches its weights, not in ``parameters()`` or ``state_dict()``. Training images are
            encoded without gradient and deterministically (a KL autoencoder gives its posterior mean).
        lpl: ``None`` (plain latent diffusion) or ``lpl(z_pred, z_target, snr=None) -> Tensor[B]`` on scaled
            latents, zero below its SNR threshold (``pdlib.perceptual.LatentPerceptualLoss``); an
            ``nn.Module`` is wrapped in ``Frozen``.
        lpl_weight: w_LPL in ``L = L_diff + w_LPL * L_LPL`` (the paper's grid search finds about 3 best;
            the authors' public code uses 1 to 2).
        parameterization: what ``net`` predicts: ``"eps"`` (the paper's main setting), ``"v"`` or ``"x0"``.
        cond_drop_prob, min_snr_gamma, data_shape: as ``DDPM`` (``data_shape`` is the shape of one *latent*).

    ``loss(x, **cond)`` takes images and returns ``{"loss", "mse"[, "lpl"]}``; ``sample`` returns images.
    """

    def __init__(self, net: nn.Module, process: GaussianDiffusion, autoencoder: nn.Module,
                 lpl: Callable | None = None, lpl_weight: float = 1.0, parameterization: str = "eps", *,
                 cond_drop_prob: float = 0.0, min_snr_gamma: float | None = None, data_shape: tuple | None = None):
        super().__init__(net, process, parameterization, cond_drop_prob=cond_drop_prob,
                         min_snr_gamma=min_snr_gamma, data_shape=data_shape)
        if parameterization == "eps" and float(process.alphas_cumprod[-1]) == 0.0:
            raise ValueError("this schedule ends at zero SNR, where z0_hat from an eps prediction divides by zero "
                             "and eps sampling is undefined: use parameterization='v' or 'x0'")
        self.autoencoder = _check_autoencoder(autoencoder)
        self.lpl = _check_lpl(lpl, lpl_weight)
        self.lpl_weight = float(lpl_weight)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled latents of images ``x``, without gradient (the posterior mean for a KL autoencoder)."""
        with torch.no_grad():
            return self.autoencoder.encode(x).detach()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents ``z`` (not clamped)."""
        return self.autoencoder.decode(z)

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Encode the images ``x0``, draw t ~ U{0..T-1} and eps ~ N(0, I) per sample (the draws and their
        order are DDPM's), and return ``{"loss", "mse"[, "lpl"]}``: ``mse`` is DDPM's loss on the latents,
        ``lpl`` is ``lpl_weight * mean_b lpl(z0_hat, z0, snr_t)`` with z0_hat from the prediction (Table 1)
        and ``snr_t = abar_t / (1 - abar_t)``; only with an ``lpl`` and ``lpl_weight > 0``."""
        _validate.tensor("x0", x0, min_ndim=2)
        z0 = self.encode(x0)
        self.data_shape = tuple(z0.shape[1:])
        b = z0.shape[0]
        t = torch.randint(0, self.process.T, (b,), generator=generator, device=z0.device)
        eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        if self.cond_drop_prob > 0 and cond.get("y") is not None:
            cond = {**cond, "y": self._drop_labels(cond["y"], generator)}
        zt = self.process.q_sample(z0, t, eps)
        out = self.net(zt, t, **cond)
        target = self.process.target(z0, eps, t, self.parameterization)
        _check_output(out, target)
        per_sample = (out - target).pow(2).flatten(1).mean(1)
        if self.min_snr_gamma is not None:
            per_sample = per_sample * self.loss_weight(t).to(per_sample.dtype)
        terms = {"mse": per_sample.mean()}
        if self.lpl is not None and self.lpl_weight > 0:
            _, z0_hat = self.process.split_prediction(zt, t, out, self.parameterization)
            snr = self.process.snr(t).to(device=z0.device, dtype=torch.float32)
            terms["lpl"] = _lpl_term(self.lpl, self.lpl_weight, z0_hat, z0, snr)
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps=None, generator: torch.Generator | None = None, clip: bool | None = None,
               return_latents: bool = False, return_trajectory: bool = False, **kw):
        """Sample latents with ``GaussianDiffusion.sample`` (as ``DDPM.sample``: ``sampler``, ``eta``, labels
        ``y``, ``guidance_scale``, ...) and decode them. ``n_or_shape`` is a count or a full *latent* shape.

        ``clip`` (None or True: clamp the decoded images to [-1, 1]; False: the raw decoder output) applies to
        the images only: the latents are never clamped (scaled latents have unit variance, not range [-1, 1]).
        Returns the images; with ``return_latents`` also the final latents, with ``return_trajectory`` also the
        latent trajectory ``[n_steps + 1, *latent_shape]``: ``images``, ``(images, latents)``,
        ``(images, trajectory)`` or ``(images, latents, trajectory)``."""
        out = super().sample(n_or_shape, steps=steps, generator=generator, return_trajectory=return_trajectory, **kw)
        z, trajectory = out if return_trajectory else (out, None)
        images = _finish(z, self.decode, True if clip is None else clip, has_autoencoder=True)
        extra = ((z,) if return_latents else ()) + ((trajectory,) if return_trajectory else ())
        return (images, *extra) if extra else images


class FlowMatching(Method):
    """Flow matching on the optimal-transport path (rectified flow) with velocity prediction, an Euler
    sampler, and an optional latent perceptual loss (module docstring).

    Args:
        net: the velocity network ``net(x_t, t * time_scale, **cond)`` (e.g. a ``UNet`` or ``MLP2D``).
        lpl: ``None`` or ``lpl(z_pred, z_target, snr=None) -> Tensor[B]`` (as ``LatentDiffusion``), applied to
            ``z0_hat = x_t - t v_hat`` with ``snr = ((1 - t) / t)^2``; an ``nn.Module`` is wrapped in ``Frozen``.
        lpl_weight: w_LPL in ``L = L_FM + w_LPL * L_LPL``.
        autoencoder: ``None`` (the flow runs on the data themselves) or a frozen autoencoder as in
            ``LatentDiffusion``: training images are encoded to scaled latents without gradient, and samples
            are decoded.
        time_scale: the network sees ``t * time_scale`` (module docstring: its sinusoidal embedding is made for
            integer steps; the default 1000 maps t in [0, 1] onto the range of DDPM's steps). Must be > 0.
        cond_drop_prob: probability of replacing the label ``y`` by the network's ``null_class`` in training
            (classifier-free guidance, as ``DDPM``).
        data_shape: shape of one example of the flow's space (a latent with an autoencoder); else taken from
            the first training batch or from ``net.data_shape``.

    ``loss(x, **cond)`` returns ``{"loss", "mse"[, "lpl"]}``; ``sample`` integrates from t = 1 to t = 0.
    """

    def __init__(self, net: nn.Module, lpl: Callable | None = None, lpl_weight: float = 1.0, *,
                 autoencoder: nn.Module | None = None, time_scale: float = 1000.0, cond_drop_prob: float = 0.0,
                 data_shape: tuple | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module net(x, t, **cond), got {type(net).__name__}")
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) \
                or not math.isfinite(time_scale) or time_scale <= 0:
            raise ValueError(f"time_scale must be a finite number > 0 (the network sees t * time_scale; "
                             f"1000 matches DDPM's integer steps), got {time_scale!r}")
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must lie in [0, 1], got {cond_drop_prob}")
        self.net = net
        self.lpl = _check_lpl(lpl, lpl_weight)
        self.lpl_weight = float(lpl_weight)
        self.autoencoder = None if autoencoder is None else _check_autoencoder(autoencoder)
        self.time_scale, self.cond_drop_prob = float(time_scale), cond_drop_prob
        self.data_shape = None if data_shape is None else tuple(data_shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """The predicted velocity at continuous times ``t`` [B] in [0, 1] (the network sees ``t * time_scale``)."""
        return self.net(x, t * self.time_scale, **cond)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data to the flow's space: scaled latents without gradient with an autoencoder, else ``x`` itself."""
        if self.autoencoder is None:
            return x
        with torch.no_grad():
            return self.autoencoder.encode(x).detach()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The flow's space to data: the autoencoder's decoder (not clamped), else the identity."""
        return z if self.autoencoder is None else self.autoencoder.decode(z)

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Draw t ~ U(0, 1) and eps ~ N(0, I) per sample (in that order, then label dropout), and return
        ``{"loss", "mse"[, "lpl"]}``: ``mse`` is the mean squared error of the predicted velocity to
        ``eps - x0`` at ``x_t = (1 - t) x0 + t eps``; ``lpl`` is ``lpl_weight * mean_b lpl(x_t - t v_hat, x0,
        ((1 - t) / t)^2)`` (only with an ``lpl`` and ``lpl_weight > 0``). With an autoencoder, ``x0`` are
        images and the flow runs on their scaled latents."""
        _validate.tensor("x0", x0, min_ndim=2)
        z0 = self.encode(x0)
        self.data_shape = tuple(z0.shape[1:])
        b = z0.shape[0]
        t = torch.rand((b,), generator=generator, device=z0.device, dtype=z0.dtype)
        eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        if self.cond_drop_prob > 0 and cond.get("y") is not None:
            cond = {**cond, "y": _drop_labels(self.net, cond["y"], self.cond_drop_prob, generator)}
        zt = flow_interpolate(z0, eps, t)
        out = self(zt, t, **cond)
        target = flow_velocity(z0, eps)
        _check_output(out, target)
        terms = {"mse": (out - target).pow(2).flatten(1).mean(1).mean()}
        if self.lpl is not None and self.lpl_weight > 0:
            terms["lpl"] = _lpl_term(self.lpl, self.lpl_weight, flow_predict_x0(zt, t, out), z0, flow_snr(t))
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}

    def _shape(self, n_or_shape) -> tuple:
        if not isinstance(n_or_shape, int) or isinstance(n_or_shape, bool):
            return tuple(n_or_shape)
        _validate.positive_int("n", n_or_shape)
        self.data_shape = self.data_shape or getattr(self.net, "data_shape", None)
        if self.data_shape is None:
            raise ValueError("pass a full shape (in the flow's space: latents with an autoencoder), or "
                             "data_shape=..., before the first loss() call")
        return (n_or_shape, *self.data_shape)

    @torch.no_grad()
    def sample(self, n_or_shape, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: str = "euler", eta: float = 0.0, y: torch.Tensor | None = None,
               guidance_scale: float | None = None, guidance_rescale: float = 0.0, clip: bool | None = None,
               noise: torch.Tensor | None = None, progress: bool = True, device=None,
               return_latents: bool = False, return_trajectory: bool = False):
        """Euler integration of the learned ODE from ``x_1 ~ N(0, I)`` (or ``noise``) at t = 1 to t = 0 in
        ``steps`` evenly spaced steps (default ``DEFAULT_EULER_STEPS``), ``steps`` network calls (twice the
        batch with guidance), then decoding with an autoencoder.

        ``n_or_shape``: a count or a full shape in the flow's space (latents with an autoencoder). Labels ``y``
        condition the network; with ``guidance_scale`` w the velocity is guided,
        ``v_uncond + w (v_cond - v_uncond)`` (``pdlib.guidance``). ``sampler`` is ``"euler"``; ``"ddim"`` is
        accepted as its alias (deterministic DDIM is the Euler method of the diffusion ODE, Song et al. 2021,
        section 4.3), so a config written for diffusion methods runs; ``eta`` must be 0 (the sampler is
        deterministic). ``clip``: clamp the result to [-1, 1] (None: only decoded images are clamped).
        Returns the samples; with ``return_latents`` (with an autoencoder) also the final latents, with
        ``return_trajectory`` also the path ``[steps + 1, *shape]`` in the flow's space, in that order."""
        _validate.choice("sampler", sampler, SAMPLERS)
        if eta != 0:
            raise ValueError(f"the Euler sampler is deterministic; eta must be 0, got {eta}")
        if steps is None:
            steps = DEFAULT_EULER_STEPS
        if isinstance(steps, (str, bool)) or not isinstance(steps, int):
            raise TypeError(f"steps must be an int number of Euler steps (or None for {DEFAULT_EULER_STEPS}), "
                            f"got {steps!r}")
        _validate.positive_int("steps", steps)
        if return_latents and self.autoencoder is None:
            raise ValueError("return_latents needs an autoencoder; without one the samples are the flow's states")
        shape = self._shape(n_or_shape)
        if device is None:
            param = next(self.net.parameters(), None)
            device = param.device if param is not None else (noise.device if noise is not None else "cpu")
        x = torch.randn(shape, generator=generator, device=device) if noise is None else noise.to(device)
        if tuple(x.shape) != shape:
            raise ValueError(f"noise shape {tuple(x.shape)} differs from shape {shape}")
        model, kwargs = self.net, {}
        if y is not None and guidance_scale is not None:
            if not 0.0 <= guidance_rescale <= 1.0:
                raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale}")
            model = classifier_free_guidance(self.net, y, guidance_scale, "v", rescale=guidance_rescale)
        elif y is not None:
            kwargs = {"y": y}
        was_training = self.net.training
        self.net.eval()
        try:
            out = euler_sample(model, x, steps, time_scale=self.time_scale, model_kwargs=kwargs, progress=progress,
                               return_trajectory=return_trajectory)
        finally:
            self.net.train(was_training)
        z, trajectory = out if return_trajectory else (out, None)
        result = _finish(z, self.decode, clip, has_autoencoder=self.autoencoder is not None)
        extra = ((z,) if return_latents else ()) + ((trajectory,) if return_trajectory else ())
        return (result, *extra) if extra else result


__all__ = ["DEFAULT_EULER_STEPS", "SAMPLERS", "FlowMatching", "LatentDiffusion", "euler_sample", "flow_interpolate",
           "flow_predict_x0", "flow_snr", "flow_velocity"]
