"""Toy 2D distances: sliced Wasserstein and MMD against closed forms for Gaussians and hand computations."""

import math

import numpy as np
import pytest
import torch

from pdlib.metrics import mmd, sliced_wasserstein

F64 = torch.float64


def gauss(n, mu, s=1.0, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(mu), generator=g, dtype=dtype) * s + torch.tensor(mu, dtype=dtype)


# ------------------------------------------------------------------------------ sliced Wasserstein
def projected_closed_form(mu, n_projections, seed):
    """sqrt(mean_u (u.mu)^2) over the unit directions the metric draws from the same generator: the
    SW2 distance between N(0, I) and N(mu, I) for those directions, W2(N(0,1), N(a,1)) = |a|."""
    dirs = torch.randn(2, n_projections, generator=torch.Generator().manual_seed(seed), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    return float(((torch.tensor(mu, dtype=F64) @ dirs) ** 2).mean().sqrt())


@pytest.mark.parametrize("mu", [(1.0, 0.0), (1.5, -2.0), (0.0, 0.3)])
def test_sw_gaussian_shift_closed_form(mu):
    """SW2(N(0, I), N(mu, I)) = |mu| / sqrt(2) in 2D (the mean of (u.mu)^2 over unit u is |mu|^2/2)."""
    n, k = 10000, 128
    x, y = gauss(n, (0.0, 0.0), seed=1), gauss(n, mu, seed=2)
    got = sliced_wasserstein(x, y, n_projections=k, generator=torch.Generator().manual_seed(0))
    # against the closed form for the drawn directions, only the sampling error of the two sets remains:
    # W2^2 of two empirical N(0,1) of n points is O(1/n), the difference of their means has sd sqrt(2/n)
    assert got == pytest.approx(projected_closed_form(mu, k, 0), abs=5 * math.sqrt(2 / n) + 0.01)
    # against |mu|/sqrt(2), the Monte Carlo error over k directions adds sd(cos^2) = 1/sqrt(8) per direction
    mc = math.hypot(*mu) ** 2 / math.sqrt(8 * k) / (2 * max(math.hypot(*mu) / math.sqrt(2), 0.1))
    assert got == pytest.approx(math.hypot(*mu) / math.sqrt(2), abs=5 * mc + 5 * math.sqrt(2 / n) + 0.01)


def test_sw_exact_for_a_translated_copy():
    """y = x + mu: every projection is shifted by u.mu, so SW^2 = mean_u (u.mu)^2 over the same directions."""
    x = gauss(500, (0.0, 0.0), seed=3)
    mu = torch.tensor([0.7, -1.1], dtype=F64)
    got = sliced_wasserstein(x, x + mu, n_projections=64, generator=torch.Generator().manual_seed(5))
    dirs = torch.randn(2, 64, generator=torch.Generator().manual_seed(5), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    assert got == pytest.approx(float(((mu @ dirs) ** 2).mean().sqrt()), rel=1e-10)


def test_sw_one_dimensional_exact():
    """In 1D every direction is +-1 and SW is the W2 distance of the sorted samples."""
    x = torch.tensor([[0.0], [1.0], [5.0]], dtype=F64)
    y = torch.tensor([[2.0], [-1.0], [3.0]], dtype=F64)
    expected = math.sqrt(((np.sort([0, 1, 5]) - np.sort([2, -1, 3])) ** 2).mean())
    assert sliced_wasserstein(x, y, n_projections=7) == pytest.approx(expected, rel=1e-12)


def test_sw_zero_for_identical_sets_and_permutations():
    x = gauss(1000, (0.3, -0.2), seed=4)
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(1000)]) == pytest.approx(0.0, abs=1e-12)


def test_sw_symmetric():
    x, y = gauss(800, (0.0, 0.0), seed=5), gauss(800, (1.0, 1.0), seed=6)
    a = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(1))
    b = sliced_wasserstein(y, x, generator=torch.Generator().manual_seed(1))
    assert a == pytest.approx(b, rel=1e-12)


def test_sw_different_sizes():
    mu = (1.0, 1.0)
    x, y = gauss(10000, (0.0, 0.0), seed=7), gauss(2500, mu, seed=8)
    got = sliced_wasserstein(x, y, n_projections=128, generator=torch.Generator().manual_seed(2))
    assert got == pytest.approx(projected_closed_form(mu, 128, 2), abs=5 * math.sqrt(1 / 10000 + 1 / 2500) + 0.01)
    same = sliced_wasserstein(gauss(10000, mu, seed=9), y, n_projections=128,
                              generator=torch.Generator().manual_seed(2))
    assert same < 0.06
    # a set and a subsample of itself of a different size
    x = gauss(4000, (0.0, 0.0), seed=10)
    assert sliced_wasserstein(x, x[::2]) < 0.05
    # sizes 3 and 2 in 1D: both quantile functions at the levels (i + 0.5)/3 are 0, 1, 2
    a = torch.tensor([[0.0], [1.0], [2.0]], dtype=F64)
    b = torch.tensor([[0.0], [2.0]], dtype=F64)
    assert sliced_wasserstein(a, b, n_projections=3) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, b + 1, n_projections=3) == pytest.approx(1.0, rel=1e-12)


def test_sw_accepts_float32_and_returns_float():
    x, y = gauss(100, (0.0, 0.0), dtype=torch.float32), gauss(100, (1.0, 0.0), seed=2, dtype=torch.float32)
    assert isinstance(sliced_wasserstein(x, y), float)


def test_sw_bad_input():
    with pytest.raises(ValueError):
        sliced_wasserstein(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError):
        sliced_wasserstein(torch.randn(10), torch.randn(10))
    with pytest.raises(TypeError):
        sliced_wasserstein(np.zeros((10, 2)), torch.randn(10, 2))


# ----------------------------------------------------------------------------------------- MMD
def mmd2_closed_form(mu1, mu2, s, d, bandwidths):
    """E k(X, X') etc. for Gaussians N(mu, s^2 I) with k = exp(-|a-b|^2 / (2 h^2)), summed over h."""
    dist2 = float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2))
    total = 0.0
    for h in bandwidths:
        c = (h * h / (h * h + 2 * s * s)) ** (d / 2)
        total += 2 * c * (1 - math.exp(-dist2 / (2 * (h * h + 2 * s * s))))
    return total


def mmd2_unbiased_naive(x, y, bandwidths):
    x, y = x.numpy(), y.numpy()

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(x, y).mean())


@pytest.mark.parametrize("bandwidths", [(0.1, 0.2, 0.5, 1.0, 2.0), (0.7,), [0.3, 3.0]])
def test_mmd_matches_hand_computation(bandwidths):
    x, y = gauss(50, (0.0, 0.0), seed=1), gauss(70, (0.5, 0.2), s=0.8, seed=2)
    assert mmd(x, y, bandwidths) == pytest.approx(mmd2_unbiased_naive(x, y, bandwidths), rel=1e-10, abs=1e-13)


def test_mmd_default_bandwidths():
    x, y = gauss(40, (0.0, 0.0), seed=3), gauss(30, (1.0, 0.0), seed=4)
    assert mmd(x, y) == pytest.approx(mmd2_unbiased_naive(x, y, (0.1, 0.2, 0.5, 1.0, 2.0)), rel=1e-10)


@pytest.mark.parametrize("mu, s, bandwidths", [((1.0, 0.0), 1.0, (0.1, 0.2, 0.5, 1.0, 2.0)),
                                               ((0.5, 0.5), 0.5, (0.5,)),
                                               ((2.0, 0.0), 0.5, (1.0, 2.0))])
def test_mmd_gaussian_closed_form(mu, s, bandwidths):
    n = 1000
    x, y = gauss(n, (0.0, 0.0), s=s, seed=11), gauss(n, mu, s=s, seed=12)
    expected = mmd2_closed_form((0.0, 0.0), mu, s, 2, bandwidths)
    got = mmd(x, y, bandwidths)
    # the unbiased estimator's sd is about 2 sqrt(Var(h)/n) <= 2 sqrt(2 c K / n) with K kernels
    sd = 2 * math.sqrt(2 * len(bandwidths) * expected / n)
    assert got == pytest.approx(expected, abs=4 * sd)
    assert got == pytest.approx(expected, rel=0.25)


def test_mmd_near_zero_for_same_distribution():
    x, y = gauss(1000, (0.3, -0.3), seed=21), gauss(1000, (0.3, -0.3), seed=22)
    same = mmd(x, y)
    differ = mmd(x, gauss(1000, (0.6, -0.3), seed=23))
    assert abs(same) < 0.005
    assert differ > 10 * abs(same)
    # unbiased: identical sets give a small negative value, not exactly zero
    assert mmd(x, x) < 0


def test_mmd_bad_input():
    with pytest.raises(ValueError):
        mmd(torch.randn(1, 2), torch.randn(10, 2))
    with pytest.raises(ValueError):
        mmd(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError):
        mmd(torch.randn(10, 2, 1), torch.randn(10, 2, 1))


def test_wilson_interval_known_values_and_errors():
    from pdlib.metrics import wilson_interval

    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # the textbook example
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson_interval(512, 512)
    assert hi == 1.0 and 0.99 < lo < 1.0
    for k, n in [(-1, 10), (11, 10)]:
        with pytest.raises(ValueError):
            wilson_interval(k, n)
