"""Noise schedules: the betas of a discrete Gaussian diffusion, respacing and zero terminal SNR.

Book: chapter "DDPM", section "Noise schedules". Every array is float64 (API convention); cast it
where it is used. Index ``i`` of a schedule is the papers' step ``i + 1``.
"""

from __future__ import annotations

import math

import torch

from . import _validate

SCHEDULES = ("linear", "cosine", "quadratic", "ddgan")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020) linear betas, with both ends scaled by 1000/T (Nichol & Dhariwal 2021, sec. 2)."""
    scale = 1000.0 / T
    if scale * beta_end >= 1:
        raise ValueError(f"the linear schedule scaled to T={T} would have betas >= 1; use T >= "
                         f"{int(1000 * beta_end) + 1} or another schedule")
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """abar(u) = cos^2(((u + s)/(1 + s)) * pi/2) for u = t/T in [0, 1] (Nichol & Dhariwal 2021, eq. 17)."""
    return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """beta_i = min(1 - abar((i+1)/T)/abar(i/T), max_beta) (Nichol & Dhariwal 2021, sec. 3.2)."""
    u = torch.arange(T + 1, dtype=torch.float64) / T
    abar = cosine_alpha_bar(u, s)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def quadratic_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Latent-diffusion "scaled linear" schedule: sqrt(beta) evenly spaced, then squared."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


def vp_sde_variance(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """Marginal variance of the VP SDE at continuous time t in [0, 1] (Song et al. 2021, eq. 33)."""
    log_mean = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    return 1.0 - torch.exp(2.0 * log_mean)


def ddgan_betas(T: int, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> torch.Tensor:
    """DDGAN's few-step schedule (Xiao et al. 2022, appendix): the VP SDE read off at
    ``t_i = (i/T)(1 - eps) + eps`` for i = 0..T, ``abar_i = 1 - var(t_i)``, ``beta_i = 1 - abar_i/abar_{i-1}``.

    The cumulative product of these betas is ``abar_i / abar_0``, as in the authors' code.
    """
    t = torch.arange(T + 1, dtype=torch.float64) / T * (1 - eps) + eps
    abar = 1.0 - vp_sde_variance(t, beta_min, beta_max)
    return 1.0 - abar[1:] / abar[:-1]


_BUILDERS = {"linear": linear_betas, "cosine": cosine_betas, "quadratic": quadratic_betas, "ddgan": ddgan_betas}


def beta_schedule(name: str, T: int, **kw) -> torch.Tensor:
    """Betas of length ``T`` (float64) for ``name`` in ``linear``, ``cosine``, ``quadratic``, ``ddgan``.

    Keyword arguments go to the builder (for example ``s`` for cosine, ``beta_min`` for ddgan).
    """
    _validate.choice("name", name, SCHEDULES)
    _validate.positive_int("T", T)
    try:
        return _BUILDERS[name](T, **kw)
    except TypeError as err:
        raise TypeError(f"bad keyword for the {name!r} schedule: {err}") from None


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Invert abar_t = prod_{s<=t}(1 - beta_s): beta_0 = 1 - abar_0, beta_t = 1 - abar_t/abar_{t-1}."""
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / prev


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar) so the last step has zero SNR and the first is unchanged
    (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Algorithm 1).

    The last beta becomes exactly 1; use v-prediction with it (eps-prediction divides by zero there).
    """
    _validate.tensor("betas", betas, ndim=1)
    betas = betas.to(torch.float64)
    sqrt_abar = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    return betas_from_alphas_cumprod(sqrt_abar**2)


def space_timesteps(T: int, spec) -> list[int]:
    """Which of the ``T`` steps to keep when sampling with fewer (improved diffusion's respacing).

    ``spec`` is an int (that many steps, evenly spread, first and last included), ``"ddimN"`` (the
    stride ``k`` for which ``range(0, T, k)`` has exactly N steps, as in DDIM), a comma-separated
    string or list of counts (split ``T`` into equal sections and take that many from each).
    Returns the kept indices, sorted ascending.
    """
    _validate.positive_int("T", T)
    if isinstance(spec, str) and spec.startswith("ddim"):
        try:
            count = int(spec[4:])
        except ValueError:
            raise ValueError(f"spec {spec!r}: expected 'ddimN' with N an integer") from None
        for stride in range(1, T + 1):
            if len(range(0, T, stride)) == count:
                return list(range(0, T, stride))
        raise ValueError(f"no integer stride gives exactly {count} of {T} steps; try a plain count")
    if isinstance(spec, str):
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"spec {spec!r}: expected an int, 'ddimN' or comma-separated ints") from None
    elif isinstance(spec, int) and not isinstance(spec, bool):
        counts = [spec]
    elif isinstance(spec, (list, tuple)):
        counts = [int(c) for c in spec]
    else:
        raise TypeError(f"spec must be an int, a string or a list of ints, got {type(spec).__name__}")
    size, extra = divmod(T, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if not 1 <= count <= length:
            raise ValueError(f"cannot take {count} steps from a section of {length} (T={T}, spec={spec!r})")
        stride = (length - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        for _ in range(count):  # accumulate as improved diffusion does: rounding ties then agree
            kept.append(start + round(position))
            position += stride
        start += length
    return sorted(set(kept))
