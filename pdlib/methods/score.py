"""Score matching and Langevin dynamics (Song & Ermon 2019). Book chapter "Score matching".

A score model s(x, i) estimates grad_x log p_sigma_i(x), the score of the data blurred with
Gaussian noise of scale sigma_i; the noise levels run from large to small.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import _validate
from ..progress import progress_bar


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """Noise scales sigma_1 > ... > sigma_L in geometric progression (Song & Ermon 2019, sec. 4.1)."""
    _validate.positive_int("levels", levels)
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_max}, {sigma_min}")
    return torch.logspace(torch.log10(torch.tensor(sigma_max)), torch.log10(torch.tensor(sigma_min)),
                          levels, dtype=torch.float64).float()


class NoiseConditionalScore(nn.Module):
    """s(x, i) = net(x, i) / sigma_i: a network whose output is scaled by the noise level, so its raw
    output stays of order one at every level (Song & Ermon 2020, "Improved techniques", sec. 3.3)."""

    def __init__(self, net: nn.Module, sigmas: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32))

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas[level].reshape(-1, *([1] * (x.ndim - 1)))
        return self.net(x, level) / sigma

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None) -> dict:
        """Denoising score matching over all levels, see ``dsm_loss``."""
        return {"loss": dsm_loss(self, x0, self.sigmas, generator=generator)}


def dsm_loss(score_model: Callable, x0: torch.Tensor, sigmas: torch.Tensor, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching (Vincent 2011) at random levels, weighted by lambda(sigma) = sigma^2
    (Song & Ermon 2019, eq. 5-6): mean over the batch of
    ``1/2 sigma^2 ||s(x0 + sigma z, i) + z/sigma||^2``."""
    _validate.tensor("x0", x0, min_ndim=2)
    sigmas = torch.as_tensor(sigmas, device=x0.device, dtype=x0.dtype)
    level = torch.randint(0, len(sigmas), (x0.shape[0],), generator=generator, device=x0.device)
    sigma = sigmas[level].reshape(-1, *([1] * (x0.ndim - 1)))
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    score = score_model(x0 + sigma * z, level)
    return 0.5 * ((sigma * score + z) ** 2).flatten(1).sum(1).mean()


def langevin_step(score: torch.Tensor, x: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """x <- x + (alpha/2) grad log p(x) + sqrt(alpha) z  (Song & Ermon 2019, eq. 4)."""
    return x + 0.5 * step_size * score + step_size**0.5 * noise


@torch.no_grad()
def annealed_langevin(score_model: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                      n_steps_each: int = 100, step_lr: float = 2e-5, denoise: bool = True,
                      generator: torch.Generator | None = None, progress: bool = True,
                      return_trajectory: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): ``n_steps_each`` Langevin steps
    at each level with step size alpha_i = step_lr sigma_i^2 / sigma_L^2, from the largest sigma to
    the smallest. With ``denoise`` a final Tweedie step x + sigma_L^2 s(x, L) removes the last noise
    (Song & Ermon 2020, sec. 3.4). Returns x (and the states after each level when asked)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    _validate.positive_int("n_steps_each", n_steps_each)
    trajectory = [x.cpu()]
    for i in progress_bar(range(len(sigmas)), desc="annealed Langevin", enabled=progress):
        level = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        alpha = step_lr * float(sigmas[i] / sigmas[-1]) ** 2
        for _ in range(n_steps_each):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = langevin_step(score_model(x, level), x, alpha, z)
        trajectory.append(x.cpu())
    if denoise:
        x = x + float(sigmas[-1]) ** 2 * score_model(x, level)
    return (x, torch.stack(trajectory)) if return_trajectory else x
