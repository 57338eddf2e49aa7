"""Dual diffusion (Benny & Wolf 2022) and Cas-DM (An et al. 2024): losses against formulas written out here,
the gradient routing that separates the two designs, the mean-mixing identity of the samplers, sampling and
argument errors. Tiny convolutional networks and stub networks with fixed outputs keep it fast."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdlib.diffusion import GaussianDiffusion
from pdlib.methods.casdm import CasDM
from pdlib.methods.dual import DualDiffusion, mix_x0
from pdlib.schedules import beta_schedule, space_timesteps
from pdlib.train.frozen import Frozen

T = 50
B, C, H = 4, 2, 4
F64 = torch.float64


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(beta_schedule("linear", T))


# ------------------------------------------------------------------------------------------- networks
class Fixed(nn.Module):
    """A stub network that ignores its input and returns a fixed (trainable) tensor; it records its input."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = nn.Parameter(out.clone())
        self.seen = None

    def forward(self, x, t):
        self.seen = x.detach().clone()
        return self.out * 1.0


class TinyNet(nn.Module):
    """conv -> + time embedding -> SiLU -> conv; ``scale`` inflates the output (to make clipping matter)."""

    def __init__(self, cin, cout, scale=1.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.temb = nn.Conv2d(cin, 8, 3, padding=1), nn.Linear(1, 8)
        self.conv2, self.scale = nn.Conv2d(8, cout, 3, padding=1), scale
        self.modes = []  # self.training at each call

    def forward(self, x, t):
        self.modes.append(self.training)
        emb = self.temb(t.to(x.dtype)[:, None] / T)[:, :, None, None]
        return self.scale * self.conv2(F.silu(self.conv1(x) + emb))


class ConvMetric(nn.Module):
    """A small fixed conv-net feature distance, per sample (a stand-in for LPIPS)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.f = nn.Sequential(nn.Conv2d(C, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 3, padding=1))

    def forward(self, pred, target):
        return (self.f(pred) - self.f(target)).pow(2).flatten(1).mean(1)


def l1_metric(pred, target):
    return (pred - target).abs().flatten(1).mean(1)


def images(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, H, generator=g, dtype=dtype) * 2 - 1


def dual(process, scale=1.0, **kw):
    return DualDiffusion(TinyNet(C, 2 * C + 1, scale), process, **kw)


def casdm(process, scale=1.0, **kw):
    return CasDM(TinyNet(C, C, seed=1), TinyNet(C, C + 1, scale, seed=2), process, **kw)


# ------------------------------------------------------------------------------- formulas written out
def coefs(process, t, dtype):
    """beta_t, alpha_t, abar_t, abar_{t-1} (Ho et al. 2020), each shaped [B, 1, 1, 1]."""
    betas = process.betas
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    return [v[t].to(dtype).view(-1, 1, 1, 1) for v in (betas, 1 - betas, abar, abar_prev)]


def draws(process, x0, seed):
    """t then eps from a generator seeded as the method's, and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    _, _, abar, _ = coefs(process, t, x0.dtype)
    return t, eps, abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def posterior_mean(process, x0, xt, t):
    """Eq. 7 of the Cas-DM paper (Ho et al. 2020, eq. 7)."""
    beta, alpha, abar, abar_prev = coefs(process, t, xt.dtype)
    return abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * xt


def eps_form_mean(process, eps, xt, t):
    """Eq. 9 of the Cas-DM paper: the posterior mean written with eps'."""
    _, alpha, abar, _ = coefs(process, t, xt.dtype)
    return xt / alpha.sqrt() - (1 - alpha) / ((1 - abar).sqrt() * alpha.sqrt()) * eps


def x0_from_eps(process, eps, xt, t):
    """Eq. 8 of the Cas-DM paper."""
    _, _, abar, _ = coefs(process, t, xt.dtype)
    return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()


# ------------------------------------------------------------------------------- losses, by hand
def test_dual_loss_terms_match_closed_form(process):
    x0 = images(dtype=F64)
    g = torch.Generator().manual_seed(3)
    out = torch.randn(B, 2 * C + 1, H, H, generator=g, dtype=F64)
    method = DualDiffusion(Fixed(out), process, metric=l1_metric, metric_weight=0.3)
    got = method.loss(x0, generator=torch.Generator().manual_seed(11))
    t, eps, xt = draws(process, x0, 11)
    torch.testing.assert_close(method.net.seen, xt, rtol=1e-12, atol=1e-12)  # same t and eps as drawn here
    x0p, epsp, r = out[:, :C], out[:, C:2 * C], torch.sigmoid(out[:, 2 * C:])
    mu_mix = r * posterior_mean(process, x0p, xt, t) + (1 - r) * eps_form_mean(process, epsp, xt, t)
    want = {"x0": (x0p - x0).pow(2).mean(), "eps": (epsp - eps).pow(2).mean(),
            "mu": (posterior_mean(process, x0, xt, t) - mu_mix).pow(2).mean(),
            "metric": 0.3 * (x0p - x0).abs().flatten(1).mean(1).mean()}
    assert set(got) == {"loss", *want}
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12)
        assert not got[key].requires_grad
    torch.testing.assert_close(got["loss"], sum(want.values()), rtol=1e-10, atol=1e-12)
    assert got["loss"].requires_grad


def test_casdm_loss_terms_match_closed_form(process):
    x0 = images(dtype=F64)
    g = torch.Generator().manual_seed(4)
    eps_out = torch.randn(B, C, H, H, generator=g, dtype=F64)
    phi_out = torch.randn(B, C + 1, H, H, generator=g, dtype=F64)
    lam = {"lambda_eps": 0.7, "lambda_x0": 1.3, "lambda_mu": 0.4, "lambda_metric": 0.2}
    method = CasDM(Fixed(eps_out), Fixed(phi_out), process, metric=l1_metric, **lam)
    got = method.loss(x0, generator=torch.Generator().manual_seed(12))
    t, eps, xt = draws(process, x0, 12)
    x0_star = x0_from_eps(process, eps_out, xt, t)
    torch.testing.assert_close(method.phi.seen, x0_star.clamp(-1, 1), rtol=1e-10, atol=1e-12)  # phi's input
    x0p, r = phi_out[:, :C], torch.sigmoid(phi_out[:, C:])
    mu_mix = r * posterior_mean(process, x0p, xt, t) + (1 - r) * eps_form_mean(process, eps_out, xt, t)
    want = {"eps": 0.7 * (eps_out - eps).pow(2).mean(), "x0": 1.3 * (x0p - x0).pow(2).mean(),
            "mu": 0.4 * (posterior_mean(process, x0, xt, t) - mu_mix).pow(2).mean(),
            "metric": 0.2 * (x0p - x0).abs().flatten(1).mean(1).mean()}
    assert set(got) == {"loss", *want}
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["loss"], sum(want.values()), rtol=1e-10, atol=1e-12)
    # no metric (or weight 0): no "metric" key
    assert "metric" not in CasDM(Fixed(eps_out), Fixed(phi_out), process).loss(x0)
    assert "metric" not in CasDM(Fixed(eps_out), Fixed(phi_out), process, l1_metric, lambda_metric=0.0).loss(x0)


# ------------------------------------------------------------------------------- gradient routing
def grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


@pytest.mark.parametrize("metric", [l1_metric, Frozen(ConvMetric())], ids=["l1", "convnet"])
def test_casdm_theta_gradient_is_exactly_the_eps_loss(process, metric):
    """The defining property: with every phi-side loss on, theta's gradient is that of lambda_eps * MSE(eps)."""
    x0 = images()
    method = casdm(process, metric=metric, lambda_eps=0.8, lambda_x0=1.0, lambda_mu=1.0, lambda_metric=0.5)
    out = method.loss(x0, generator=torch.Generator().manual_seed(5))
    assert "metric" in out and float(out["metric"]) > 0
    out["loss"].backward()
    got, phi_grads = grads(method.theta), grads(method.phi)
    method.zero_grad(set_to_none=True)
    t, eps, xt = draws(process, x0, 5)
    (0.8 * (method.theta(xt, t) - eps).pow(2).mean()).backward()
    want = grads(method.theta)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), (a - b).abs().max()
    assert all(p.grad is None for p in method.phi.parameters())  # the reference does not touch phi
    assert all(bool(g.abs().sum() > 0) for g in phi_grads)  # and the real loss does


@pytest.mark.parametrize("term", ["x0", "mu", "metric"])
def test_casdm_phi_learns_from_each_phi_term_and_theta_from_none(process, term):
    lam = {"lambda_eps": 0.0, "lambda_x0": 0.0, "lambda_mu": 0.0, "lambda_metric": 0.0}
    lam[f"lambda_{term}"] = 1.0
    method = casdm(process, metric=l1_metric, **lam)
    method.loss(images(), generator=torch.Generator().manual_seed(6))["loss"].backward()
    assert all(bool((g == 0).all()) for g in grads(method.theta))
    assert sum(float(g.abs().sum()) for g in grads(method.phi)) > 0


def test_metric_reaches_the_shared_net_in_dual_but_not_theta_in_casdm(process):
    """The contrast the Cas-DM paper is built on: the same metric term moves dual diffusion's (shared)
    network, but leaves Cas-DM's eps network alone."""
    x0 = images()

    def shared_grads(make, metric_on, attr):
        method = make(process, metric=l1_metric, **({"metric_weight": 1.0 if metric_on else 0.0} if make is dual
                                                    else {"lambda_metric": 1.0 if metric_on else 0.0}))
        method.loss(x0, generator=torch.Generator().manual_seed(8))["loss"].backward()
        return grads(getattr(method, attr))

    without, with_metric = shared_grads(dual, False, "net"), shared_grads(dual, True, "net")
    assert not torch.allclose(without[0], with_metric[0], rtol=1e-4, atol=1e-7)  # first conv: shared by all
    without, with_metric = shared_grads(casdm, False, "theta"), shared_grads(casdm, True, "theta")
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(without, with_metric, strict=True))
    without, with_metric = shared_grads(casdm, False, "phi"), shared_grads(casdm, True, "phi")
    assert not torch.allclose(without[0], with_metric[0], rtol=1e-4, atol=1e-7)


def mu_loss_logit_grad(process, x0, xt, t, x0_direct, mu_eps, logit):
    """dL_mu/dlogit by hand: 2 sum_c (mix - mu~)(mu_x0' - mu_eps) r (1 - r) / N."""
    r = torch.sigmoid(logit)
    mu_d, target = posterior_mean(process, x0_direct, xt, t), posterior_mean(process, x0, xt, t)
    mix = r * mu_d + (1 - r) * mu_eps
    return (2 * (mix - target) * (mu_d - mu_eps)).sum(1, keepdim=True) * r * (1 - r) / x0.numel()


def test_dual_channel_gradients_are_those_of_their_own_terms(process):
    """The mixing logit learns only from L_mu, and L_mu sends nothing into the x0 and eps channels."""
    x0 = images(dtype=F64)
    out = torch.randn(B, 2 * C + 1, H, H, generator=torch.Generator().manual_seed(9), dtype=F64)
    method = DualDiffusion(Fixed(out), process)
    method.loss(x0, generator=torch.Generator().manual_seed(13))["loss"].backward()
    grad = method.net.out.grad
    t, eps, xt = draws(process, x0, 13)
    n = x0.numel()
    torch.testing.assert_close(grad[:, :C], 2 * (out[:, :C] - x0) / n, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad[:, C:2 * C], 2 * (out[:, C:2 * C] - eps) / n, rtol=1e-10, atol=1e-14)
    mu_eps = eps_form_mean(process, out[:, C:2 * C], xt, t)
    want = mu_loss_logit_grad(process, x0, xt, t, out[:, :C], mu_eps, out[:, 2 * C:])
    torch.testing.assert_close(grad[:, 2 * C:], want, rtol=1e-8, atol=1e-14)
    assert float(want.abs().max()) > 0


def test_casdm_channel_gradients_are_those_of_their_own_terms(process):
    x0 = images(dtype=F64)
    g = torch.Generator().manual_seed(10)
    eps_out = torch.randn(B, C, H, H, generator=g, dtype=F64)
    phi_out = torch.randn(B, C + 1, H, H, generator=g, dtype=F64)
    method = CasDM(Fixed(eps_out), Fixed(phi_out), process, lambda_eps=0.5, lambda_x0=2.0, lambda_mu=3.0)
    method.loss(x0, generator=torch.Generator().manual_seed(14))["loss"].backward()
    t, eps, xt = draws(process, x0, 14)
    n = x0.numel()
    torch.testing.assert_close(method.theta.out.grad, 0.5 * 2 * (eps_out - eps) / n, rtol=1e-10, atol=1e-14)
    grad = method.phi.out.grad
    torch.testing.assert_close(grad[:, :C], 2.0 * 2 * (phi_out[:, :C] - x0) / n, rtol=1e-10, atol=1e-14)
    want = 3.0 * mu_loss_logit_grad(process, x0, xt, t, phi_out[:, :C], eps_form_mean(process, eps_out, xt, t),
                                    phi_out[:, C:])
    torch.testing.assert_close(grad[:, C:], want, rtol=1e-8, atol=1e-14)
    # with lambda_mu = 0 the mixing logit gets no gradient at all
    method = CasDM(Fixed(eps_out), Fixed(phi_out), process, metric=l1_metric, lambda_mu=0.0)
    method.loss(x0, generator=torch.Generator().manual_seed(14))["loss"].backward()
    assert bool((method.phi.out.grad[:, C:] == 0).all()) and float(method.phi.out.grad[:, :C].abs().sum()) > 0


# ------------------------------------------------------------------------------- sampling
def ddim_means(process, xt, t, t_prev, x0p, epsp, eta):
    """Eqs. 16 and 17 of the Cas-DM paper (with abar_{t-1} where the extraction prints abar_t), and sigma."""
    abar = process.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    abar_prev = torch.where(t_prev < 0, 1.0, process.alphas_cumprod[t_prev.clamp(min=0)]).float().view(-1, 1, 1, 1)
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    c = (1 - abar_prev - sigma**2).sqrt()
    mu_x0 = abar_prev.sqrt() * x0p + c * (xt - abar.sqrt() * x0p) / (1 - abar).sqrt()  # eq. 16
    mu_eps = abar_prev.sqrt() * (xt - (1 - abar).sqrt() * epsp) / abar.sqrt() + c * epsp  # eq. 17
    return mu_x0, mu_eps, sigma


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_mixing_the_ddim_means_equals_stepping_from_the_mixed_x0(process, eta):
    method = casdm(process, scale=3.0)
    g = torch.Generator().manual_seed(15)
    xt = torch.randn(B, C, H, H, generator=g)
    noise = torch.randn(B, C, H, H, generator=g)
    t, t_prev = torch.tensor([49, 30, 10, 0]), torch.tensor([40, 20, 3, -1])
    with torch.no_grad():
        p = method.predict(xt, t)
        mu_x0, mu_eps, sigma = ddim_means(process, xt, t, t_prev, p["x0"], p["eps"], eta)
        mixed = p["r"] * mu_x0 + (1 - p["r"]) * mu_eps + sigma * noise
        step = process.ddim_step(xt, t, t_prev, None, eta=eta, noise=noise, x0=p["x0_mix"])
        torch.testing.assert_close(step, mixed, rtol=1e-4, atol=1e-4)
        assert float((p["r"] - 0.5).abs().max()) > 1e-3  # r is not trivially constant
        # the same for the DDPM posterior mean (eq. 11 with eqs. 7 and 9)
        mu = p["r"] * posterior_mean(process, p["x0"], xt, t) + (1 - p["r"]) * eps_form_mean(process, p["eps"], xt, t)
        torch.testing.assert_close(process.q_posterior(p["x0_mix"], xt, t)[0], mu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [dual, casdm], ids=["dual", "casdm"])
def test_sampler_steps_with_the_r_mixed_means(process, make):
    """sample(clip=False) = a DDIM loop written here that mixes eqs. 16-17 with r at every step."""
    method = make(process)
    noise = torch.randn(3, C, H, H, generator=torch.Generator().manual_seed(16))
    got = method.sample((3, C, H, H), steps=4, clip=False, progress=False, noise=noise)
    kept = space_timesteps(T, 4)
    x = noise.clone()
    with torch.no_grad():
        for i, i_prev in zip(reversed(kept), reversed([-1] + kept[:-1]), strict=True):
            t, t_prev = torch.full((3,), i), torch.full((3,), i_prev)
            p = method.predict(x, t)
            mu_x0, mu_eps, _ = ddim_means(process, x, t, t_prev, p["x0"], p["eps"], 0.0)
            x = p["r"] * mu_x0 + (1 - p["r"]) * mu_eps
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [dual, casdm], ids=["dual", "casdm"])
def test_sample_shape_determinism_and_clip(process, make):
    method = make(process, scale=20.0)  # loud networks, so the unclipped samples leave [-1, 1]
    method.loss(images())  # records the data shape
    a = method.sample(3, steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    b = method.sample(3, steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    c = method.sample(3, steps=5, generator=torch.Generator().manual_seed(2), progress=False)
    assert a.shape == (3, C, H, H) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.abs().max()) <= 1.0 and torch.isfinite(a).all()
    raw = method.sample(3, steps=5, generator=torch.Generator().manual_seed(1), clip=False, progress=False)
    assert float(raw.abs().max()) > 1.0
    ddpm = method.sample((2, C, H, H), steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(1),
                         progress=False)
    # (the ancestral step's last mean is 1 * x0 up to float32 rounding of beta_0 / (1 - abar_0))
    assert ddpm.shape == (2, C, H, H) and float(ddpm.abs().max()) <= 1.0 + 1e-4
    nets = [m for m in method.modules() if isinstance(m, TinyNet)]
    assert all(net.modes[0] for net in nets)  # the loss call ran in training mode
    assert all(not any(net.modes[1:]) for net in nets)  # every sampling call ran in eval mode
    assert method.training and all(net.training for net in nets)  # and the training mode is restored


def test_sample_needs_a_shape_before_training(process):
    method = CasDM(Fixed(torch.zeros(1)), Fixed(torch.zeros(1)), process)
    with pytest.raises(ValueError, match="full shape"):
        method.sample(2, progress=False)


def test_mixing_weight(process):
    method = dual(process)
    xt = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(17))
    r = method.mixing_weight(xt, 25)
    assert r.shape == (B, 1, H, H) and bool(((r > 0) & (r < 1)).all()) and not r.requires_grad
    logit = method.net(xt, torch.full((B,), 25))[:, 2 * C:]
    torch.testing.assert_close(r, torch.sigmoid(logit).detach())
    method = casdm(process)
    r_int, r_vec = method.mixing_weight(xt, 25), method.mixing_weight(xt, torch.full((B,), 25))
    assert r_int.shape == (B, 1, H, H) and torch.equal(r_int, r_vec)
    with pytest.raises(ValueError, match="timesteps"):
        method.mixing_weight(xt, T)


def test_phi_input_is_clamped_where_x0_star_explodes():
    """Cosine schedule with the paper's T = 4000: at the last step eq. 8 multiplies the eps error by ~8e4."""
    process = GaussianDiffusion(beta_schedule("cosine", 4000))
    g = torch.Generator().manual_seed(18)
    xt, eps_out = torch.randn(B, C, H, H, generator=g), torch.randn(B, C, H, H, generator=g)
    phi_out = torch.zeros(B, C + 1, H, H)
    method = CasDM(Fixed(eps_out), Fixed(phi_out), process)
    p = method.predict(xt, 3999)
    assert float(p["x0_star"].abs().max()) > 100  # the unclamped estimate is huge ...
    assert torch.isfinite(method.phi.seen).all() and float(method.phi.seen.abs().max()) <= 1.0  # phi sees [-1, 1]
    assert torch.equal(p["phi_input"], method.phi.seen)
    raw = CasDM(Fixed(eps_out), Fixed(phi_out), process, clip_x0_star=False)
    raw.predict(xt, 3999)
    assert float(raw.phi.seen.abs().max()) > 100
    # the eps branch of the mix keeps the unclamped x0* (eq. 9), whatever phi saw
    torch.testing.assert_close(p["x0_mix"], mix_x0(p["r"], p["x0"], p["x0_star"]))


# ------------------------------------------------------------------------------- errors
def test_wrong_channel_counts_raise(process):
    x0 = images()
    with pytest.raises(ValueError, match=r"2C\+1.*= 5 channels"):
        DualDiffusion(TinyNet(C, 2 * C), process).loss(x0)
    with pytest.raises(ValueError, match=r"phi must output C\+1.*= 3 channels"):
        CasDM(TinyNet(C, C), TinyNet(C, C), process).loss(x0)
    with pytest.raises(ValueError, match=r"theta must output C .*= 2 channels"):
        CasDM(TinyNet(C, C + 1), TinyNet(C, C + 1), process).loss(x0)


@pytest.mark.parametrize("name", ["lambda_eps", "lambda_x0", "lambda_mu", "lambda_metric"])
def test_negative_casdm_weights_raise(process, name):
    with pytest.raises(ValueError, match=name):
        CasDM(TinyNet(C, C), TinyNet(C, C + 1), process, **{name: -0.1})


def test_other_bad_arguments_raise(process):
    with pytest.raises(ValueError, match="metric_weight"):
        DualDiffusion(TinyNet(C, 5), process, metric=l1_metric, metric_weight=-1.0)
    with pytest.raises(ValueError, match="metric_weight"):
        DualDiffusion(TinyNet(C, 5), process, metric_weight=float("nan"))
    with pytest.raises(ValueError, match=r"Tensor\[B\]"):
        DualDiffusion(TinyNet(C, 5), process, metric=lambda a, b: (a - b).abs().mean(), metric_weight=1.0).loss(
            images())
    zero_snr = GaussianDiffusion(torch.cat([torch.full((9,), 0.1, dtype=F64), torch.ones(1, dtype=F64)]))
    with pytest.raises(ValueError, match="abar"):
        CasDM(TinyNet(C, C), TinyNet(C, C + 1), zero_snr)
    with pytest.raises(TypeError, match="GaussianDiffusion"):
        DualDiffusion(TinyNet(C, 5), "linear")


# ------------------------------------------------------------------------------- a short training run
def test_short_casdm_training_lowers_both_networks_losses(process):
    """A few Adam steps on a fixed batch: theta's eps loss and phi's x0 loss both fall (fixed t and eps)."""
    method = casdm(process, metric=l1_metric)
    x0 = images(seed=20)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)

    def evaluate():
        with torch.no_grad():
            return method.loss(x0.repeat(4, 1, 1, 1), generator=torch.Generator().manual_seed(99))

    before = evaluate()
    for step in range(150):
        opt.zero_grad()
        method.loss(x0, generator=torch.Generator().manual_seed(step))["loss"].backward()
        opt.step()
    after = evaluate()
    assert float(after["eps"]) < 0.8 * float(before["eps"])
    assert float(after["x0"]) < 0.85 * float(before["x0"])  # (0.39 -> 0.29 here)
