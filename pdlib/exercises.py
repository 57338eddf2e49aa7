"""Checkers for the book's exercises: they run a student's function against pdlib's on random
inputs and say whether it is right, with a hint when it is not.

Each ``check_*`` returns a ``CheckResult`` (truthy when correct) and prints its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .diffusion import GaussianDiffusion
from .guidance import guided_output
from .schedules import beta_schedule
from .methods.score import langevin_step


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _compare(name: str, fn: Callable, args: tuple, expected: torch.Tensor, hint: str,
             atol: float = 1e-5, quiet: bool = False) -> CheckResult:
    try:
        got = fn(*args)
    except NotImplementedError:
        result = CheckResult(False, f"{name}: not implemented yet (replace the TODO).")
    except Exception as err:  # the student's code may fail in any way; report it, do not crash
        result = CheckResult(False, f"{name}: your function raised {type(err).__name__}: {err}")
    else:
        if got is None:
            result = CheckResult(False, f"{name}: your function returned None (replace the TODO).")
        elif not isinstance(got, torch.Tensor):
            result = CheckResult(False, f"{name}: expected a torch.Tensor, got {type(got).__name__}.")
        elif got.shape != expected.shape:
            result = CheckResult(False, f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
        elif not torch.allclose(got.double(), expected.double(), atol=atol, rtol=1e-4):
            err = (got.double() - expected.double()).abs().max().item()
            result = CheckResult(False, f"{name}: values differ (max error {err:.3g}). Hint: {hint}")
        else:
            result = CheckResult(True, f"{name}: correct!")
    if not quiet:
        print(result.message)
    return result


def _case(seed: int = 0, T: int = 100, shape=(16, 2)):
    g = torch.Generator().manual_seed(seed)
    process = GaussianDiffusion(beta_schedule("linear", T))
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (shape[0],), generator=g)
    t[0], t[-1] = 0, T - 1
    return process, x0, eps, t


def check_q_sample(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, t, eps, alphas_cumprod) -> x_t`` (DDPM chapter, eq. 4)."""
    p, x0, eps, t = _case()
    return _compare("q_sample", fn, (x0, t, eps, p.alphas_cumprod), p.q_sample(x0, t, eps),
                    "x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps; index abar with t and add a "
                    "trailing axis ([:, None]) to broadcast over the coordinates.", quiet=quiet)


def check_posterior_mean(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x0, xt, t, betas) -> mean of q(x_{t-1} | x_t, x_0)`` (DDPM chapter, eq. 7)."""
    p, x0, eps, t = _case(1)
    xt = p.q_sample(x0, t, eps)
    return _compare("posterior mean", fn, (x0, xt, t, p.betas), p.q_posterior(x0, xt, t)[0],
                    "abar_{t-1} is 1 at t = 0; the x0 coefficient is sqrt(abar_{t-1}) beta_t/(1-abar_t) "
                    "and the x_t coefficient sqrt(alpha_t)(1-abar_{t-1})/(1-abar_t).", quiet=quiet)


def check_cosine_schedule(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(T) -> betas`` of the cosine schedule (DDPM chapter)."""
    return _compare("cosine schedule", fn, (50,), beta_schedule("cosine", 50),
                    "abar(u) = cos^2((u + s)/(1 + s) * pi/2) with s = 0.008 at u = i/T for i = 0..T; "
                    "beta_i = 1 - abar(i+1)/abar(i), clipped at 0.999.", quiet=quiet)


def check_ddim_step(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(xt, eps, abar_t, abar_prev) -> x_prev`` for eta = 0 (DDIM chapter, eq. 12)."""
    p, x0, eps, t = _case(2)
    xt = p.q_sample(x0, t, eps)
    t = t.clamp(min=1)
    t_prev = t - 1
    abar, abar_prev = p.alphas_cumprod[t][:, None], p.alphas_cumprod[t_prev][:, None]
    return _compare("ddim step", fn, (xt, eps, abar, abar_prev), p.ddim_step(xt, t, t_prev, eps),
                    "first predict x0 = (x_t - sqrt(1-abar_t) eps)/sqrt(abar_t), then "
                    "x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.", quiet=quiet)


def check_langevin_step(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(score, x, step_size, noise) -> x_next`` (score matching chapter, eq. 4)."""
    g = torch.Generator().manual_seed(3)
    score, x, z = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(3))
    return _compare("langevin step", fn, (score, x, 0.01, z), langevin_step(score, x, 0.01, z),
                    "x + step_size/2 * score + sqrt(step_size) * noise.", quiet=quiet)


def check_dsm_target(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(x_noisy, x0, sigma) -> grad log q(x_noisy | x0)`` (score matching chapter, eq. 2)."""
    g = torch.Generator().manual_seed(4)
    x0, z = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(2))
    sigma = 0.3
    return _compare("dsm target", fn, (x0 + sigma * z, x0, sigma), -z / sigma,
                    "q(x~|x) = N(x, sigma^2 I), so its score is -(x~ - x)/sigma^2.", quiet=quiet)


def check_guidance(fn: Callable, quiet: bool = False) -> CheckResult:
    """``fn(eps_cond, eps_uncond, w) -> guided eps`` (guidance chapter)."""
    g = torch.Generator().manual_seed(5)
    cond, uncond = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(2))
    return _compare("classifier-free guidance", fn, (cond, uncond, 3.0), guided_output(cond, uncond, 3.0),
                    "start from the unconditional prediction and move w times along (cond - uncond); "
                    "w = 1 must give the conditional prediction back.", quiet=quiet)
