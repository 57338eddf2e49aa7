"""Min-SNR-gamma loss weighting (Hang et al. 2023): the weighted target loss equals min(SNR, gamma) times
the x0-space error, whatever the target, and None is L_simple."""

import pytest
import torch
from torch import nn

from pdlib import GaussianDiffusion
from pdlib.methods import DDPM
from pdlib.schedules import beta_schedule


class Noisy(nn.Module):
    """A 'network' whose output is a fixed random function of its input (so errors are non-trivial)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 3) * 0.3)

    def forward(self, x, t):
        return x @ self.w + 0.01 * t[:, None].float()


@pytest.mark.parametrize("param", ["eps", "v", "x0"])
def test_min_snr_weight_is_x0_space_weight(param):
    process = GaussianDiffusion(beta_schedule("cosine", 200))
    gamma = 5.0
    method = DDPM(Noisy(), process, parameterization=param, min_snr_gamma=gamma)
    x0 = torch.randn(4096, 3)
    g = torch.Generator().manual_seed(0)
    loss = method.loss(x0, generator=g)["mse"]
    # redo the same draws by hand, measuring the error of the implied x0
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, process.T, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    xt = process.q_sample(x0, t, eps)
    _, x0_hat = process.split_prediction(xt, t, method.net(xt, t), param)
    abar = process.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    expected = (snr.clamp(max=gamma) * (x0_hat - x0).pow(2).mean(1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


def test_no_weighting_is_l_simple_and_weights_are_one():
    process = GaussianDiffusion(beta_schedule("linear", 100))
    method = DDPM(Noisy(), process, parameterization="eps")
    t = torch.arange(100)
    assert torch.equal(method.loss_weight(t), torch.ones(100, dtype=torch.float64))
    weighted = DDPM(Noisy(), process, parameterization="eps", min_snr_gamma=5.0).loss_weight(t)
    # eps weights: 1 where SNR <= gamma (noisy steps), below 1 where SNR > gamma (the first steps)
    snr = process.alphas_cumprod / (1 - process.alphas_cumprod)
    assert torch.all(weighted[snr <= 5] == 1) and torch.all(weighted[snr > 5] < 1)


@pytest.mark.parametrize("gamma", [0.0, -1.0])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DDPM(Noisy(), GaussianDiffusion(beta_schedule("linear", 100)), min_snr_gamma=gamma)
