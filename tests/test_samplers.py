"""End-to-end sampling with the exact denoiser of Gaussian data.

For x0 ~ N(m, s^2 I): x_t ~ N(sqrt(abar) m, V I) with V = abar s^2 + 1 - abar, and
E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) m) / V,  E[x0 | x_t] = m + sqrt(abar) s^2 (x_t - sqrt(abar) m) / V.

With these predictors every sampler step is affine in x plus Gaussian noise, so the exact law of the
samples after the discrete sampler is a Gaussian whose mean and std we compute here with a scalar
recursion written from the papers' formulas (independent of pdlib). The samples must match that law
within sampling error (5 standard errors). The discrete samplers are not exact (DDPM's fixed
variances and DDIM's discretisation shrink or inflate the spread, and x_T ~ N(0, I) is not exactly
q(x_T)), so the comparison with (m, s) itself is loose and only made where the sampler is close.
"""

import numpy as np
import pytest
import torch

from pdlib import GaussianDiffusion
from pdlib.schedules import rescale_zero_terminal_snr, space_timesteps

T = 100
BETAS = np.linspace(10 * 1e-4, 10 * 0.02, T)  # linear schedule scaled by 1000/T
M = np.array([1.0, -0.5])
S = 0.5
N = 20000


def exact_predictor(abar, parameterization, m=M, s=S):
    """model(x, t) predicting eps, x0 or v exactly for N(m, s^2 I) data; t are original indices."""
    abar_t = torch.from_numpy(np.asarray(abar, dtype=np.float64))
    m_t = torch.from_numpy(m)
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        a = abar_t[t].reshape(-1, 1)
        x64 = x.double()
        V = a * s**2 + 1 - a
        u = x64 - a.sqrt() * m_t
        eps = (1 - a).sqrt() * u / V
        x0 = m_t + a.sqrt() * s**2 * u / V
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[parameterization]
        return out.to(x.dtype)

    model.calls = calls
    return model


def exact_law(abar, kept, sampler, m=M, s=S, eta=0.0, variance="small"):
    """Mean [2] and std of the samples of the discrete sampler run on the kept steps of abar."""
    mu, var = np.zeros_like(m), 1.0
    ak = np.asarray(abar)[kept]
    for j in reversed(range(len(kept))):
        a, ap = ak[j], (ak[j - 1] if j > 0 else 1.0)
        V = a * s * s + 1 - a
        A0, B0 = np.sqrt(a) * s * s / V, m - a * s * s * m / V  # x0_hat = A0 x + B0
        Ae, Be = np.sqrt(1 - a) / V, -np.sqrt((1 - a) * a) * m / V  # eps_hat = Ae x + Be
        if sampler == "ddpm":
            b = 1 - a / ap  # the (respaced) beta
            c0, c1 = np.sqrt(ap) * b / (1 - a), np.sqrt(1 - b) * (1 - ap) / (1 - a)
            A, B = c0 * A0 + c1, c0 * B0
            C2 = ((1 - ap) / (1 - a) * b if variance == "small" else b) if j > 0 else 0.0
        else:
            sig = eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
            d = np.sqrt(max(1 - ap - sig**2, 0.0))
            A, B, C2 = np.sqrt(ap) * A0 + d * Ae, np.sqrt(ap) * B0 + d * Be, sig**2
        mu, var = A * mu + B, A * A * var + C2
    return mu, np.sqrt(var)


def check_law(x, mu, std, k=5.0):
    x = x.double().numpy()
    assert np.isfinite(x).all()
    n = len(x)
    se_mean, se_std = std / np.sqrt(n), std / np.sqrt(2 * n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mu), k * se_mean)
    np.testing.assert_array_less(np.abs(x.std(0) - std), k * se_std)
    assert abs(np.corrcoef(x.T)[0, 1]) < k / np.sqrt(n)


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(torch.from_numpy(BETAS.copy()))


ABAR = np.cumprod(1 - BETAS)
FULL = list(range(T))
DDIM10 = list(range(0, T, 10))
_SAMPLES = {}


def draw(process, parameterization, sampler, steps, eta, variance, seed=1234):
    """Samples of one configuration, cached so that several tests can look at the same run."""
    key = (parameterization, sampler, steps, eta, variance, seed)
    if key not in _SAMPLES:
        model = exact_predictor(ABAR, parameterization)
        x = process.sample(model, (N, 2), sampler=sampler, steps=steps, eta=eta, variance=variance,
                           parameterization=parameterization, generator=torch.Generator().manual_seed(seed),
                           progress=False)
        _SAMPLES[key] = (x, model.calls)
    return _SAMPLES[key]


CASES = [
    # parameterization, sampler, steps, eta, variance
    ("eps", "ddpm", None, 0.0, "small"),
    ("v", "ddpm", None, 0.0, "small"),
    ("x0", "ddpm", None, 0.0, "large"),
    ("eps", "ddim", None, 0.0, "small"),
    ("x0", "ddim", None, 1.0, "small"),
] + [(p, sampler, "ddim10", eta, "small") for p in ("eps", "x0", "v")
     for sampler, eta in (("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0))]


@pytest.mark.parametrize("parameterization, sampler, steps, eta, variance", CASES)
def test_exact_gaussian_sampling(process, parameterization, sampler, steps, eta, variance):
    x, calls = draw(process, parameterization, sampler, steps, eta, variance)
    assert x.shape == (N, 2) and x.dtype == torch.float32
    kept = FULL if steps is None else DDIM10
    # the network is called with the original indices, from the noisiest kept step down
    assert calls == kept[::-1]
    mu, std = exact_law(ABAR, kept, sampler, eta=eta, variance=variance)
    check_law(x, mu, std)


@pytest.mark.parametrize("parameterization, sampler, eta", [("eps", "ddpm", 0.0), ("eps", "ddim", 0.0),
                                                            ("x0", "ddim", 1.0)])
def test_full_step_samplers_reproduce_data_law(process, parameterization, sampler, eta):
    """With all T = 100 steps the samplers get close to N(m, s^2): mean within 0.01 and std within 8%
    (the exact discrete-time laws above are 6.4% (DDPM, small variance) and 2.8% (DDIM) narrow)."""
    x = draw(process, parameterization, sampler, None, eta, "small")[0].double()
    np.testing.assert_allclose(x.mean(0).numpy(), M, atol=0.01 + 5 * S / np.sqrt(N))
    np.testing.assert_allclose(x.std(0).numpy(), [S, S], rtol=0.08)


def test_wrong_variance_is_detected(process):
    """The test's power: the law of 'large' samples is far from the law of 'small' at this N."""
    mu_s, std_s = exact_law(ABAR, FULL, "ddpm", variance="small")
    mu_l, std_l = exact_law(ABAR, FULL, "ddpm", variance="large")
    assert abs(std_s - std_l) > 10 * std_s / np.sqrt(2 * N)
    x = draw(process, "x0", "ddpm", None, 0.0, "large")[0]
    check_law(x, mu_l, std_l)
    with pytest.raises(AssertionError):
        check_law(x, mu_s, std_s)


@pytest.mark.parametrize("sampler, steps, eta", [("ddpm", None, 0.0), ("ddpm", "ddim10", 0.0), ("ddim", "ddim10", 0.0),
                                                 ("ddim", "ddim10", 1.0), ("ddim", 10, 0.0), ("ddim", 10, 1.0)])
def test_zero_terminal_snr_v_prediction(sampler, steps, eta):
    """With abar_{T-1} = 0 and a v model, every sampler is finite and exact, also when it starts at the
    pure-noise step t = T-1 itself (an integer step count keeps it; "ddim10" starts at 90)."""
    betas = rescale_zero_terminal_snr(torch.from_numpy(BETAS.copy()))
    process = GaussianDiffusion(betas)
    abar = np.cumprod(1 - betas.numpy())
    assert abar[-1] == 0.0
    model = exact_predictor(abar, "v")
    x = process.sample(model, (N, 2), sampler=sampler, steps=steps, eta=eta, parameterization="v",
                       generator=torch.Generator().manual_seed(77), progress=False)
    assert torch.isfinite(x).all()
    kept = FULL if steps is None else space_timesteps(T, steps)
    assert (kept[-1] == T - 1) == (steps in (None, 10))
    mu, std = exact_law(abar, kept, sampler, eta=eta)
    check_law(x, mu, std)
    if steps is None:
        # x_T is exactly q(x_T) = N(0, I) now, so the mean is unbiased
        np.testing.assert_allclose(x.double().mean(0).numpy(), M, atol=5 * S / np.sqrt(N))
        np.testing.assert_allclose(x.double().std(0).numpy(), [S, S], rtol=0.08)


def test_return_trajectory(process):
    model = exact_predictor(ABAR, "eps")
    x, traj = process.sample(model, (8, 2), generator=torch.Generator().manual_seed(0), progress=False,
                             return_trajectory=True)
    assert traj.shape == (T + 1, 8, 2)
    torch.testing.assert_close(traj[-1], x, rtol=0, atol=0)
    torch.testing.assert_close(traj[0], torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    x, traj = process.sample(model, (8, 2), sampler="ddim", steps="ddim10", progress=False, return_trajectory=True)
    assert traj.shape == (len(DDIM10) + 1, 8, 2)
    torch.testing.assert_close(traj[-1], x, rtol=0, atol=0)
    x, traj = process.sample(model, (8, 2), steps=7, progress=False, return_trajectory=True)
    assert traj.shape == (8, 8, 2)


def test_sample_uses_given_noise(process):
    model = exact_predictor(ABAR, "eps")
    noise = torch.randn(16, 2)
    x, traj = process.sample(model, (16, 2), sampler="ddim", noise=noise, progress=False, return_trajectory=True)
    torch.testing.assert_close(traj[0], noise, rtol=0, atol=0)
    # DDIM with eta = 0 is deterministic given x_T
    y = process.sample(model, (16, 2), sampler="ddim", noise=noise, progress=False)
    torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("sampler, eta", [("ddpm", 0.0), ("ddim", 1.0)])
def test_determinism_with_generator(process, sampler, eta):
    model = exact_predictor(ABAR, "eps")
    kw = dict(sampler=sampler, eta=eta, steps="ddim10", progress=False)
    a = process.sample(model, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
    b = process.sample(model, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
    c = process.sample(model, (64, 2), generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    # the same x_T with different generators: the ancestral noise differs too
    noise = torch.randn(64, 2)
    d = process.sample(model, (64, 2), noise=noise, generator=torch.Generator().manual_seed(3), **kw)
    e = process.sample(model, (64, 2), noise=noise, generator=torch.Generator().manual_seed(4), **kw)
    assert not torch.allclose(d, e)


def test_model_kwargs_are_passed(process):
    seen = []

    def model(x, t, y=None):
        seen.append(y)
        return torch.zeros_like(x)

    y = torch.arange(4)
    process.sample(model, (4, 2), steps=3, progress=False, model_kwargs={"y": y})
    assert len(seen) == 3 and all(s is y for s in seen)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_eps_prediction_on_zero_terminal_snr_is_refused(sampler):
    """abar_{T-1} = 0: x0 = (x_t - eps)/0. The samples would be all NaN/inf; API: nothing fails silently."""
    process = GaussianDiffusion(rescale_zero_terminal_snr(torch.from_numpy(BETAS.copy())))
    with pytest.raises(ValueError):
        process.sample(exact_predictor(np.cumprod(1 - process.betas.numpy()), "eps"), (8, 2), sampler=sampler,
                       parameterization="eps", progress=False)


# ---------------------------------------------------------------- the eps blow-up near zero SNR
@pytest.mark.parametrize("schedule,T,t,t_prev", [("cosine", 100, 99, 94), ("linear", 1000, 999, 979),
                                                  ("linear", 1000, 19, -1)])
def test_eps_error_gain_matches_ddim_step(schedule, T, t, t_prev):
    from pdlib.schedules import beta_schedule

    process = GaussianDiffusion(beta_schedule(schedule, T))
    x = torch.randn(4, 3, dtype=torch.float64)
    eps, delta = torch.randn_like(x), 1e-3 * torch.randn_like(x)
    step = lambda e: process.ddim_step(x, torch.full((4,), t), torch.full((4,), t_prev), e)  # noqa: E731
    moved = (step(eps + delta) - step(eps)).abs() / delta.abs()
    torch.testing.assert_close(moved, torch.full_like(moved, process.eps_error_gain(t, t_prev)), rtol=1e-6, atol=1e-9)


def test_ddim_warns_where_eps_errors_explode():
    from pdlib.schedules import beta_schedule

    def model(x, t):
        return torch.zeros_like(x)

    cosine = GaussianDiffusion(beta_schedule("cosine", 100))
    with pytest.warns(UserWarning, match="multiplies errors in eps"):
        cosine.sample(model, (2, 2), sampler="ddim", steps=20, progress=False)
    linear = GaussianDiffusion(beta_schedule("linear", 1000))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear.sample(model, (2, 2), sampler="ddim", steps=50, progress=False)
        cosine.sample(model, (2, 2), sampler="ddim", steps=20, clip=True, progress=False)
        cosine.sample(model, (2, 2), sampler="ddim", steps=20, parameterization="v", progress=False)
