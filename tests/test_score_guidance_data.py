"""Score matching, Langevin dynamics, classifier-free guidance, toy data, MLP2D and the DDPM method."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pdlib import GaussianDiffusion
from pdlib.data import TOY2D, num_classes, toy2d
from pdlib.guidance import classifier_free_guidance, guided_output, rescale_guidance
from pdlib.methods import DDPM
from pdlib.nets import MLP2D
from pdlib.methods.score import NoiseConditionalScore, annealed_langevin, dsm_loss, geometric_sigmas, langevin_step

F64 = torch.float64


# ------------------------------------------------------------------------------- score matching
def test_geometric_sigmas():
    s = geometric_sigmas(10.0, 0.01, 7)
    assert s.shape == (7,)
    np.testing.assert_allclose(s.double().numpy(), np.geomspace(10.0, 0.01, 7), rtol=1e-6)
    ratios = (s[1:] / s[:-1]).double().numpy()
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    for bad in [(0.01, 10.0, 5), (1.0, 0.0, 5), (1.0, 1.0, 5), (1.0, 0.1, 0)]:
        with pytest.raises((ValueError, TypeError)):
            geometric_sigmas(*bad)


def test_dsm_loss_hand_computation():
    sigmas = torch.tensor([1.0, 0.5, 0.1], dtype=F64)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    A = torch.tensor([[0.3, -0.2], [0.1, 0.7]], dtype=F64)

    def score(x, level):
        return -(x @ A) * (level.to(F64)[:, None] + 1)

    loss = dsm_loss(score, x0, sigmas, generator=torch.Generator().manual_seed(42))
    g = torch.Generator().manual_seed(42)
    level = torch.randint(0, 3, (64,), generator=g)
    z = torch.randn(64, 2, generator=g, dtype=F64)
    sigma = sigmas[level][:, None]
    s = score(x0 + sigma * z, level)
    # lambda(sigma) = sigma^2 times 1/2 |s + z/sigma|^2, averaged over the batch
    expected = (0.5 * sigma[:, 0] ** 2 * ((s + z / sigma) ** 2).sum(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_dsm_loss_of_exact_gaussian_score_is_its_minimum():
    """For x0 ~ N(m, s^2 I) the blurred score is -(x - m)/(s^2 + sigma^2) and the weighted DSM loss at
    level sigma equals (d/2) s^2 / (s^2 + sigma^2), its minimum over all score functions."""
    m, s, d, n = torch.tensor([1.0, -2.0], dtype=F64), 0.5, 2, 200000
    sigmas = torch.tensor([2.0, 0.7, 0.2, 0.05], dtype=F64)
    x0 = m + s * torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=F64)

    def exact(x, level):
        return -(x - m) / (s**2 + sigmas[level][:, None] ** 2)

    loss = dsm_loss(exact, x0, sigmas, generator=torch.Generator().manual_seed(2)).item()
    level = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(2))
    q = s**2 / (s**2 + sigmas[level] ** 2)
    expected = (d / 2 * q).mean().item()
    # per sample the loss is q/2 chi^2_2 (variance q^2): standard error q / sqrt(n)
    assert loss == pytest.approx(expected, abs=5 * q.max().item() / math.sqrt(n))
    # any other score does worse, by E[sigma^2/2 |delta|^2]
    worse = dsm_loss(lambda x, i: 0.8 * exact(x, i), x0, sigmas, generator=torch.Generator().manual_seed(2)).item()
    shifted = dsm_loss(lambda x, i: exact(x, i) + 0.1, x0, sigmas, generator=torch.Generator().manual_seed(2)).item()
    assert worse > loss + 0.01 and shifted > loss
    assert shifted - loss == pytest.approx((0.5 * sigmas[level] ** 2 * 0.01 * d).mean().item(), rel=0.05)


def test_noise_conditional_score_divides_by_sigma():
    sigmas = torch.tensor([4.0, 2.0, 1.0])
    net = MLP2D(hidden=16, depth=1, time_dim=8)
    model = NoiseConditionalScore(net, sigmas)
    x = torch.randn(6, 2)
    level = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(model(x, level), net(x, level) / sigmas[level][:, None])
    out = model.loss(x, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss"}
    assert out["loss"].item() == pytest.approx(
        dsm_loss(model, x, sigmas, generator=torch.Generator().manual_seed(0)).item(), rel=1e-6)


def test_langevin_step_formula():
    score, x, z = torch.randn(3, 5, 2, dtype=F64)
    torch.testing.assert_close(langevin_step(score, x, 0.04, z), x + 0.02 * score + 0.2 * z, rtol=1e-12, atol=1e-12)


def langevin_law(sigmas, n_each, step_lr, m, s, mu0, var0, denoise=True):
    """Exact mean/std per coordinate of annealed Langevin with the exact blurred Gaussian score:
    each step is x <- a x + (1 - a) m + sqrt(alpha) z with a = 1 - alpha / (2 (s^2 + sigma^2))."""
    mu, var = mu0, var0
    for sig in sigmas:
        alpha = step_lr * (sig / sigmas[-1]) ** 2
        a = 1 - alpha / (2 * (s * s + sig * sig))
        for _ in range(n_each):
            mu, var = a * mu + (1 - a) * m, a * a * var + alpha
    if denoise:  # x + sigma_L^2 score(x)
        c = 1 - sigmas[-1] ** 2 / (s * s + sigmas[-1] ** 2)
        mu, var = c * mu + (1 - c) * m, c * c * var
    return mu, np.sqrt(var)


@pytest.mark.parametrize("denoise", [True, False])
def test_annealed_langevin_samples_blurred_gaussian(denoise):
    m, s, n = np.array([1.0, -0.5]), 0.5, 10000
    sigmas = geometric_sigmas(5.0, 0.05, 10)
    sig64 = sigmas.double().numpy()
    m_t = torch.tensor(m, dtype=torch.float32)

    def score(x, level):
        return -(x - m_t) / (s**2 + sigmas[level][:, None] ** 2)

    x_init = 2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    x, traj = annealed_langevin(score, x_init, sigmas, n_steps_each=100, step_lr=1e-3, denoise=denoise,
                                generator=torch.Generator().manual_seed(1), progress=False, return_trajectory=True)
    assert traj.shape == (11, n, 2)
    torch.testing.assert_close(traj[0], x_init)
    mu, std = langevin_law(sig64, 100, 1e-3, m, s, 0.0, 4.0, denoise)
    x = x.double().numpy()
    np.testing.assert_array_less(np.abs(x.mean(0) - mu), 5 * std / math.sqrt(n))
    np.testing.assert_array_less(np.abs(x.std(0) - std), 5 * std / math.sqrt(2 * n))
    # and that law is the data's: N(m, s^2) after denoising (1% wide), N(m, s^2 + sigma_L^2) before
    np.testing.assert_allclose(x.mean(0), m, atol=0.02)
    target = s if denoise else math.sqrt(s**2 + sig64[-1] ** 2)
    np.testing.assert_allclose(x.std(0), target, rtol=0.03)


# ------------------------------------------------------------------------------------- guidance
def test_guided_output_identities():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 8, 2, generator=g, dtype=F64)
    torch.testing.assert_close(guided_output(cond, uncond, 1.0), cond, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(guided_output(cond, uncond, 0.0), uncond, rtol=0, atol=0)
    torch.testing.assert_close(guided_output(cond, uncond, 3.0), 3 * cond - 2 * uncond, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def cond_net():
    torch.manual_seed(0)
    net = MLP2D(hidden=32, depth=2, time_dim=16, num_classes=3)
    with torch.no_grad():  # make the label embedding matter
        net.label.weight.mul_(5)
    return net.eval()


def test_classifier_free_guidance_hand_computation(cond_net):
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 5, 10, 20, 30, 49])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    f = classifier_free_guidance(cond_net, y, 2.5)
    with torch.no_grad():
        out = f(x, t)
        cond = cond_net(x, t, y=y)
        uncond = cond_net(x, t, y=torch.full_like(y, 3))
    assert not torch.allclose(cond, uncond, atol=1e-3)
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(classifier_free_guidance(cond_net, y, 1.0)(x, t), cond, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(classifier_free_guidance(cond_net, y, 0.0)(x, t), uncond, rtol=1e-5, atol=1e-5)


def test_classifier_free_guidance_rescale(cond_net):
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 5, 10, 20, 30, 49])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    betas = np.linspace(20 * 1e-4, 20 * 0.02, 50)
    abar = torch.tensor(np.cumprod(1 - betas)[t.numpy()], dtype=torch.float32)[:, None]
    process = GaussianDiffusion(torch.from_numpy(betas))
    with torch.no_grad():
        cond = cond_net(x, t, y=y)
        uncond = cond_net(x, t, y=torch.full_like(y, 3))
        guided = uncond + 4.0 * (cond - uncond)
        # v (or x0) networks: rescale the prediction itself
        out_v = classifier_free_guidance(cond_net, y, 4.0, "v", rescale=0.7)(x, t)
        rescaled = guided * cond.std(1, keepdim=True) / guided.std(1, keepdim=True)
        torch.testing.assert_close(out_v, 0.7 * rescaled + 0.3 * guided, rtol=1e-5, atol=1e-5)
        # eps networks: rescale the x0 implied by the prediction, then convert back
        out_e = classifier_free_guidance(cond_net, y, 4.0, "eps", process=process, rescale=0.7)(x, t)
        x0_c = (x - (1 - abar).sqrt() * cond) / abar.sqrt()
        x0_g = (x - (1 - abar).sqrt() * guided) / abar.sqrt()
        x0_r = x0_g * x0_c.std(1, keepdim=True) / x0_g.std(1, keepdim=True)
        x0_mix = 0.7 * x0_r + 0.3 * x0_g
        torch.testing.assert_close(out_e, (x - abar.sqrt() * x0_mix) / (1 - abar).sqrt(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        classifier_free_guidance(cond_net, y, 4.0, "eps", rescale=0.7)  # needs the process
    with pytest.raises(ValueError):
        classifier_free_guidance(MLP2D(hidden=8, depth=1), y, 2.0)  # no null class


def test_rescale_guidance_matches_std():
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(5, 3, 4, 4, generator=g, dtype=F64)
    guided = 3 * torch.randn(5, 3, 4, 4, generator=g, dtype=F64) + 1
    out = rescale_guidance(guided, cond, 1.0)
    torch.testing.assert_close(out.flatten(1).std(1), cond.flatten(1).std(1), rtol=1e-10, atol=1e-12)
    # only the scale changes, per sample
    ratio = out / guided
    torch.testing.assert_close(ratio, ratio[:, :1, :1, :1].expand_as(ratio), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.0), guided, rtol=0, atol=0)
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.7), 0.7 * out + 0.3 * guided, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------- toy data
@pytest.mark.parametrize("name", TOY2D)
def test_toy2d_shape_dtype_determinism(name):
    x = toy2d(name, 3000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, toy2d(name, 3000, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    assert not torch.allclose(x, toy2d(name, 3000, generator=torch.Generator().manual_seed(1)))
    # roughly standardised (module docstring): the same schedules suit every set
    assert (x.std(0) > 0.5).all() and (x.std(0) < 1.5).all()
    assert (x.mean(0).abs() < 0.5).all()


@pytest.mark.parametrize("name", TOY2D)
def test_toy2d_labels(name):
    x, y = toy2d(name, 4000, generator=torch.Generator().manual_seed(0), return_labels=True)
    assert y.shape == (4000,) and y.dtype == torch.long
    k = num_classes(name)
    assert int(y.min()) == 0 and int(y.max()) == k - 1
    assert len(torch.unique(y)) == k
    # the points are the same with and without labels
    torch.testing.assert_close(x, toy2d(name, 4000, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)


def test_toy2d_labels_mean_something():
    x, y = toy2d("8gaussians", 2000, generator=torch.Generator().manual_seed(0), return_labels=True)
    angle = y.double() * math.pi / 4
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * 2 / 1.414
    assert ((x.double() - centres).norm(dim=1) < 0.6).all()
    x, y = toy2d("circles", 2000, generator=torch.Generator().manual_seed(0), return_labels=True)
    r = x.norm(dim=1)
    assert r[y == 0].min() > r[y == 1].max()
    x, y = toy2d("checkerboard", 2000, generator=torch.Generator().manual_seed(0), return_labels=True)
    assert torch.equal(y, (x[:, 1] >= 0).long())
    assert num_classes("swissroll") == 1


def test_toy2d_errors():
    with pytest.raises(ValueError, match="moons"):
        toy2d("spiral", 10)
    with pytest.raises(ValueError):
        toy2d("moons", 0)
    with pytest.raises(TypeError):
        toy2d("moons", 10.0)
    with pytest.raises(ValueError):
        num_classes("spiral")


# --------------------------------------------------------------------------------------- MLP2D
def test_mlp2d_shapes_and_conditioning():
    torch.manual_seed(0)
    net = MLP2D(hidden=32, depth=2, time_dim=16)
    x, t = torch.randn(7, 2), torch.randint(0, 100, (7,))
    assert net(x, t).shape == (7, 2)
    torch.testing.assert_close(net(x, torch.tensor(5)), net(x, torch.full((7,), 5)))
    assert not torch.allclose(net(x, torch.full((7,), 5)), net(x, torch.full((7,), 50)))
    assert net.data_shape == (2,) and net.null_class is None
    assert MLP2D(dim=3, out_dim=5)(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)).shape == (4, 5)
    # real-valued timesteps (noise levels) work too
    assert net(x, torch.rand(7)).shape == (7, 2)

    c = MLP2D(hidden=32, depth=2, time_dim=16, num_classes=4)
    assert c.null_class == 4
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    assert c(x, t, y=y).shape == (7, 2)
    torch.testing.assert_close(c(x, t), c(x, t, y=torch.full((7,), 4)))  # no label = the null label


def test_mlp2d_errors():
    net = MLP2D(hidden=16, depth=1)
    t = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError):
        net(torch.randn(4, 3), t)
    with pytest.raises(ValueError):
        net(torch.randn(4, 2, 1), t)
    with pytest.raises(ValueError):
        net(torch.randn(4), t)
    with pytest.raises(TypeError):
        net(np.zeros((4, 2)), t)
    with pytest.raises(ValueError):
        net(torch.randn(4, 2), t, y=torch.zeros(4, dtype=torch.long))  # unconditional net, labels given
    c = MLP2D(hidden=16, depth=1, num_classes=3)
    with pytest.raises(ValueError):
        c(torch.randn(4, 2), t, y=torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError):
        c(torch.randn(4, 2), t, y=torch.tensor([0, -1, 2, 0]))
    with pytest.raises(ValueError):
        MLP2D(hidden=0)
    with pytest.raises(ValueError):
        MLP2D(depth=0)


# -------------------------------------------------------------------------------- DDPM method
T_TOY = 50
BETAS_TOY = np.linspace(20 * 1e-4, 20 * 0.02, T_TOY)


def toy_ddpm(parameterization="eps", **kw):
    torch.manual_seed(0)
    net = kw.pop("net", None) or MLP2D(hidden=32, depth=2, time_dim=16)
    return DDPM(net, GaussianDiffusion(torch.from_numpy(BETAS_TOY.copy())), parameterization, **kw)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_ddpm_loss_hand_computation(parameterization):
    method = toy_ddpm(parameterization)
    x0 = toy2d("moons", 128, generator=torch.Generator().manual_seed(0))
    out = method.loss(x0, generator=torch.Generator().manual_seed(5))
    assert set(out) == {"loss", "mse"}
    assert out["loss"].requires_grad and not out["mse"].requires_grad
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, T_TOY, (128,), generator=g)
    eps = torch.randn(128, 2, generator=g)
    a = torch.tensor(np.cumprod(1 - BETAS_TOY), dtype=torch.float32)[t][:, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    target = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[parameterization]
    with torch.no_grad():
        expected = ((method.net(xt, t) - target) ** 2).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["mse"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert method.net.inp.weight.grad is not None


def test_ddpm_metric_term():
    seen = {}

    def metric(pred, target):
        seen["pred"], seen["target"] = pred.detach(), target
        return (pred - target).abs().sum(1)

    method = toy_ddpm("eps", metric=metric, metric_weight=0.5)
    x0 = toy2d("moons", 64, generator=torch.Generator().manual_seed(1))
    out = method.loss(x0, generator=torch.Generator().manual_seed(6))
    assert set(out) == {"loss", "mse", "metric"}
    assert not out["metric"].requires_grad
    assert out["loss"].item() == pytest.approx(out["mse"].item() + out["metric"].item(), rel=1e-6)
    # the metric compares the predicted x0 (from the eps prediction) with the true x0
    g = torch.Generator().manual_seed(6)
    t = torch.randint(0, T_TOY, (64,), generator=g)
    eps = torch.randn(64, 2, generator=g)
    a = torch.tensor(np.cumprod(1 - BETAS_TOY), dtype=torch.float32)[t][:, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    with torch.no_grad():
        x0_hat = (xt - (1 - a).sqrt() * method.net(xt, t)) / a.sqrt()
    torch.testing.assert_close(seen["target"], x0)
    torch.testing.assert_close(seen["pred"], x0_hat, rtol=1e-4, atol=1e-4)
    assert out["metric"].item() == pytest.approx(0.5 * (x0_hat - x0).abs().sum(1).mean().item(), rel=1e-4)
    # gradients flow through the metric term
    out["loss"].backward()
    assert method.net.out[1].weight.grad.abs().sum() > 0
    # no metric term without a weight
    assert set(toy_ddpm("eps", metric=metric).loss(x0)) == {"loss", "mse"}


class LabelSpy(nn.Module):
    null_class = 3

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(y)
        return self.lin(x)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 1.0])
def test_ddpm_condition_dropout_rate(p):
    spy = LabelSpy()
    method = toy_ddpm("eps", net=spy, cond_drop_prob=p)
    n = 20000
    y = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(0))
    method.loss(torch.randn(n, 2), y=y, generator=torch.Generator().manual_seed(1))
    got = spy.seen[-1]
    dropped = got == 3
    assert torch.equal(got[~dropped], y[~dropped])  # the others keep their label
    rate = dropped.double().mean().item()
    assert rate == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n) + 1e-12)
    # dropping does not depend on the label
    if 0 < p < 1:
        for k in range(3):
            assert dropped[y == k].double().mean().item() == pytest.approx(p, abs=0.03)
    assert y.max() < 3  # the caller's labels are not modified in place


def test_ddpm_bad_arguments():
    with pytest.raises(ValueError):
        toy_ddpm("score")
    with pytest.raises(ValueError):
        toy_ddpm("eps", cond_drop_prob=1.5)
    with pytest.raises(ValueError):
        toy_ddpm("eps", metric_weight=-1.0)
    method = toy_ddpm("eps", cond_drop_prob=0.2)  # MLP2D without classes has no null class
    with pytest.raises(ValueError):
        method.loss(torch.randn(8, 2), y=torch.zeros(8, dtype=torch.long))


def test_ddpm_sample_and_guidance(cond_net):
    method = DDPM(cond_net, GaussianDiffusion(torch.from_numpy(BETAS_TOY.copy())))
    method.net.train()
    x = method.sample(16, steps=10, generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert method.net.training  # mode restored
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    kw = dict(steps=10, sampler="ddim", progress=False)
    plain = method.sample(16, y=y, generator=torch.Generator().manual_seed(2), **kw)
    guided1 = method.sample(16, y=y, guidance_scale=1.0, generator=torch.Generator().manual_seed(2), **kw)
    guided3 = method.sample(16, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(2), **kw)
    uncond = method.sample(16, generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(guided1, plain, rtol=1e-4, atol=1e-4)  # w = 1 is the conditional model
    assert not torch.allclose(guided3, plain, atol=1e-3)
    assert not torch.allclose(plain, uncond, atol=1e-3)
    assert method.sample((4, 2), steps=3, progress=False).shape == (4, 2)
