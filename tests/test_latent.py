"""Latent diffusion and flow matching with the latent perceptual loss (Berrada Ifriqi et al. 2025, section 3
and Table 1): the optimal-transport path and its velocity, z0_hat and SNR in closed form, the Euler sampler on
toy data whose velocity field is known exactly, LatentDiffusion's loss recomputed on the encoded latents, the
LPL term's weight and inputs (z0_hat per Table 1, the SNR), the frozen autoencoder, decoding and clamping of
samples, labels and guidance, the scaling of continuous time before the sinusoidal embedding, and argument
checks. A stand-in with the LPL's interface replaces ``pdlib.perceptual.LatentPerceptualLoss``. Tiny networks
on 8x8 images (4x4x4 latents) keep it fast."""

import copy
import math

import pytest
import torch
from torch import nn

from pdlib.diffusion import GaussianDiffusion
from pdlib.methods import DDPM
from pdlib.methods.latent import (
    DEFAULT_EULER_STEPS,
    FlowMatching,
    LatentDiffusion,
    euler_sample,
    flow_interpolate,
    flow_predict_x0,
    flow_snr,
    flow_velocity,
)
from pdlib.nets.autoencoder import AutoEncoder
from pdlib.nets.embedding import timestep_embedding
from pdlib.nets.unet import UNet
from pdlib.schedules import beta_schedule, rescale_zero_terminal_snr

T = 50
B, C, H = 4, 3, 8  # images
LC, LH = 4, 4  # latents: 4 channels, 4x4


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(beta_schedule("linear", T))


def tiny_ae(seed=0, kl=False):
    """A tiny f=2 autoencoder with a scale factor fitted on images (so it is not 1)."""
    torch.manual_seed(seed)
    ae = AutoEncoder(in_channels=C, latent_channels=LC, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                     kl=kl, norm_groups=4)
    ae.fit_scale_factor(images(99, 8))
    assert float(ae.scale_factor) != 1.0
    return ae


def tiny_unet(seed=0, num_classes=None, in_channels=LC, size=LH):
    """A one-level UNet with every weight perturbed (a fresh UNet's zero output conv predicts exactly 0)."""
    torch.manual_seed(seed)
    net = UNet(in_channels=in_channels, model_channels=16, channel_mult=(1,), num_res_blocks=1,
               attention_resolutions=(), image_size=size, norm_groups=8, num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(1000 + seed)))
    return net


def images(seed=0, n=B):
    return torch.randn(n, C, H, H, generator=gen(seed)).clamp(-1, 1)


class Recorder(nn.Module):
    """Wraps a network and records the inputs of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x, t, **kw):
        self.calls.append((x.detach().clone(), t.detach().clone(), {k: v.clone() for k, v in kw.items()}))
        return self.net(x, t, **kw)

    @property
    def data_shape(self):
        return self.net.data_shape

    @property
    def null_class(self):
        return self.net.null_class


class RecordingLPL:
    """A stand-in with the LPL's interface: per-sample squared error, zero below ``tau`` in SNR; records its inputs."""

    def __init__(self, tau=0.0):
        self.tau, self.calls = tau, []

    def __call__(self, z_pred, z_target, snr=None):
        self.calls.append((z_pred, z_target, snr))
        per_sample = (z_pred - z_target).pow(2).flatten(1).mean(1)
        return per_sample * (snr >= self.tau).to(per_sample.dtype)


class ConvLPL(nn.Module):
    """A stand-in LPL as a module: a random convolution on the decoded images, gated by SNR."""

    def __init__(self, ae, tau=0.0):
        super().__init__()
        self.ae, self.tau = ae, tau
        self.conv = nn.Conv2d(C, 5, 3, padding=1)

    def forward(self, z_pred, z_target, snr=None):
        d = (self.conv(self.ae.decode(z_pred)) - self.conv(self.ae.decode(z_target))).pow(2).flatten(1).mean(1)
        return d * (snr >= self.tau).to(d.dtype)


# ------------------------------------------------------------------------------------ the flow path
def test_flow_path_velocity_z0_hat_and_snr_closed_forms():
    x0, eps = torch.randn(5, 3, generator=gen(0)), torch.randn(5, 3, generator=gen(1))
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    xt = flow_interpolate(x0, eps, t)
    torch.testing.assert_close(xt[0], x0[0])  # data at t = 0
    torch.testing.assert_close(xt[4], eps[4])  # noise at t = 1
    torch.testing.assert_close(xt[2], (x0[2] + eps[2]) / 2)
    torch.testing.assert_close(xt, (1 - t[:, None]) * x0 + t[:, None] * eps)
    # the velocity is the time derivative of the path (central differences; the path is linear in t)
    h = 1e-2
    ts = torch.full((5,), 0.4)
    fd = (flow_interpolate(x0, eps, ts + h) - flow_interpolate(x0, eps, ts - h)) / (2 * h)
    torch.testing.assert_close(flow_velocity(x0, eps), fd, atol=1e-4, rtol=0)
    torch.testing.assert_close(flow_velocity(x0, eps), eps - x0)
    # z0_hat = x_t - t v recovers x0 exactly from the true velocity, at every t
    torch.testing.assert_close(flow_predict_x0(xt, t, eps - x0), x0, atol=1e-6, rtol=0)
    # SNR = alpha^2 / sigma^2 with alpha = 1 - t, sigma = t
    snr = flow_snr(t)
    assert math.isinf(float(snr[0])) and float(snr[4]) == 0.0
    torch.testing.assert_close(snr[1:4], torch.tensor([9.0, 1.0, 1 / 9]))
    with pytest.raises(ValueError, match="same shape"):
        flow_interpolate(x0, eps[:, :2], t)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        flow_interpolate(x0, eps, t[:3])


class PointVelocity(nn.Module):
    """The exact marginal velocity for data that are the single point ``a``: v(x, t) = (x - a) / t. It undoes
    the method's time scaling itself and records the times it is called with."""

    def __init__(self, a, scale):
        super().__init__()
        self.a, self.scale, self.times = a, scale, []
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, s):
        self.times.append(s.clone())
        return (x - self.a) / (s / self.scale)[:, None]


def test_euler_lands_on_a_single_data_point_along_straight_lines():
    a = torch.tensor([0.7, -1.3])
    net = PointVelocity(a, 1000.0)
    fm = FlowMatching(net, data_shape=(2,))
    noise = torch.randn(16, 2, generator=gen(0))
    x, traj = fm.sample(16, steps=7, noise=noise, progress=False, return_trajectory=True)
    torch.testing.assert_close(x, a.expand(16, 2), atol=1e-5, rtol=0)
    # the exact ODE solution is the straight line x_t = a + t (x_1 - a), along which v is constant: Euler is exact
    assert traj.shape == (8, 16, 2)
    for i, t in enumerate(torch.linspace(1, 0, 8)):
        torch.testing.assert_close(traj[i], a + t * (noise - a), atol=1e-5, rtol=0)
    # the network sees t * 1000 on the evenly spaced times 1, 6/7, ..., 1/7
    seen = torch.stack([s[0] for s in net.times])
    torch.testing.assert_close(seen, 1000 * torch.linspace(1, 0, 8)[:-1])


class GaussianVelocity(nn.Module):
    """The exact marginal velocity E[eps - x0 | x_t] for data N(mu, diag(s^2)) on the path x_t = (1-t) x0 + t eps:
    -mu + (t - (1-t) s^2) / ((1-t)^2 s^2 + t^2) (x - (1-t) mu)."""

    def __init__(self, mu, s, scale):
        super().__init__()
        self.mu, self.s, self.scale = mu, s, scale

    def forward(self, x, s_t):
        t = (s_t / self.scale)[:, None]
        var = (1 - t) ** 2 * self.s**2 + t**2
        return -self.mu + (t - (1 - t) * self.s**2) / var * (x - (1 - t) * self.mu)


def test_euler_reproduces_a_gaussian_with_the_exact_velocity():
    mu, s = torch.tensor([1.5, -0.5]), torch.tensor([0.3, 2.0])
    fm = FlowMatching(GaussianVelocity(mu, s, 1000.0), data_shape=(2,))
    x = fm.sample(20000, steps=100, generator=gen(0), progress=False)
    torch.testing.assert_close(x.mean(0), mu, atol=0.04, rtol=0)
    torch.testing.assert_close(x.std(0), s, atol=0, rtol=0.03)
    # a field that expects t * 1000 but is handed t (time_scale=1) is evaluated at the wrong times: the samples
    # stay near the noise (measured: mean (-0.04, 0.02), std (2.6, 2.7))
    wrong = FlowMatching(GaussianVelocity(mu, s, 1000.0), data_shape=(2,), time_scale=1.0)
    y = wrong.sample(2000, steps=20, generator=gen(0), progress=False)
    assert float((y.mean(0) - mu).abs()[0]) > 1.0 and float(y.std(0)[0]) > 2.0


def test_euler_sample_function_validates_and_checks_shapes():
    with pytest.raises(ValueError, match="steps"):
        euler_sample(lambda x, t: x, torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="returned shape"):
        euler_sample(lambda x, t: x[:, :1], torch.zeros(2, 2), 3, progress=False)


# ---------------------------------------------------------------------------- continuous time scaling
def emb_dist(a, b, dim=128):
    e = timestep_embedding(torch.tensor([float(a), float(b)]), dim)
    return float((e[0] - e[1]).norm())


def test_continuous_time_must_be_scaled_before_the_sinusoidal_embedding():
    # embeddings have norm sqrt(dim / 2) = 8 at dim 128 (the DDPM UNet's width), so distances lie in [0, 16]
    assert emb_dist(0, 1) == pytest.approx(1.95, abs=0.02)  # the whole unscaled range t in [0, 1]
    assert emb_dist(500, 1000) == pytest.approx(9.48, abs=0.05)  # half of DDPM's integer range
    assert emb_dist(0, 1000) > 10.0  # the scaled range t in [0, 1] -> [0, 1000]
    near_unscaled, near_scaled = emb_dist(0.50, 0.51), emb_dist(500, 510)
    assert near_unscaled < 0.03  # t = 0.50 and 0.51 are nearly the same input without scaling
    assert near_scaled > 6.0  # and clearly different with it
    assert near_scaled / near_unscaled > 200
    # the method hands the network t * time_scale, in training and in sampling
    rec = Recorder(tiny_unet())
    fm = FlowMatching(rec)
    x = torch.randn(B, LC, LH, LH, generator=gen(0))
    fm.loss(x, generator=gen(1))
    t_drawn = torch.rand((B,), generator=gen(1))  # the loss's first draw
    torch.testing.assert_close(rec.calls[0][1], 1000 * t_drawn)
    rec.calls.clear()
    fm.sample(2, steps=4, generator=gen(0), progress=False)
    torch.testing.assert_close(torch.stack([c[1][0] for c in rec.calls]), torch.tensor([1000.0, 750.0, 500.0, 250.0]))
    rec.calls.clear()
    FlowMatching(rec, time_scale=1.0).loss(x, generator=gen(1))
    torch.testing.assert_close(rec.calls[0][1], t_drawn)
    torch.testing.assert_close(fm(x, t_drawn), rec.net(x, 1000 * t_drawn))


# -------------------------------------------------------------------------------------- flow matching
def test_flow_matching_loss_is_the_velocity_mse_recomputed():
    net = tiny_unet()
    fm = FlowMatching(net)
    x0 = torch.randn(B, LC, LH, LH, generator=gen(0))
    out = fm.loss(x0, generator=gen(5))
    g = gen(5)
    t = torch.rand((B,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    tb = t[:, None, None, None]
    xt = (1 - tb) * x0 + tb * eps
    with torch.no_grad():
        expected = (net(xt, 1000 * t) - (eps - x0)).pow(2).mean()
    torch.testing.assert_close(out["mse"], expected)
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert set(out) == {"loss", "mse"} and out["loss"].requires_grad and not out["mse"].requires_grad
    assert fm.data_shape == (LC, LH, LH)


def test_flow_matching_lpl_term_gets_z0_hat_and_the_path_snr():
    net = tiny_unet()
    lpl = RecordingLPL(tau=1.0)  # gates out t > 0.5
    fm = FlowMatching(net, lpl, lpl_weight=2.5)
    x0 = torch.randn(8, LC, LH, LH, generator=gen(0))
    out = fm.loss(x0, generator=gen(7))
    g = gen(7)
    t = torch.rand((8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    tb = t[:, None, None, None]
    xt = (1 - tb) * x0 + tb * eps
    with torch.no_grad():
        v_hat = net(xt, 1000 * t)
    (z_pred, z_target, snr), = lpl.calls
    torch.testing.assert_close(z_pred.detach(), xt - tb * v_hat)  # Table 1, Flow-OT row
    torch.testing.assert_close(z_target, x0)
    torch.testing.assert_close(snr, ((1 - t) / t) ** 2)
    assert z_pred.requires_grad and not z_target.requires_grad
    gated = (snr >= 1.0)
    assert 0 < int(gated.sum()) < 8  # the seed gives both kinds, so the batch mean counts the zeros
    per = (xt - tb * v_hat - x0).pow(2).flatten(1).mean(1) * gated
    torch.testing.assert_close(out["lpl"], 2.5 * per.sum() / 8)
    torch.testing.assert_close(out["loss"].detach(), out["mse"] + out["lpl"])
    # weight 0: the term is skipped (and not computed)
    lpl.calls.clear()
    assert set(FlowMatching(net, lpl, lpl_weight=0.0).loss(x0, generator=gen(7))) == {"loss", "mse"}
    assert not lpl.calls


def test_flow_matching_with_an_autoencoder_trains_on_latents_and_decodes():
    ae, net = tiny_ae(), tiny_unet()
    fm = FlowMatching(net, autoencoder=ae)
    plain = FlowMatching(net)
    x = images(0)
    with torch.no_grad():
        z = ae.encode(x)
    torch.testing.assert_close(fm.loss(x, generator=gen(3))["mse"], plain.loss(z, generator=gen(3))["mse"])
    assert fm.data_shape == (LC, LH, LH)
    imgs, lat = fm.sample(3, steps=3, generator=gen(0), progress=False, return_latents=True)
    assert imgs.shape == (3, C, H, H) and lat.shape == (3, LC, LH, LH)
    assert float(imgs.abs().max()) <= 1.0
    with torch.no_grad():
        torch.testing.assert_close(imgs, ae.decode(lat).clamp(-1, 1))
    # the latents are those of the plain flow from the same noise (decoding is the only difference)
    torch.testing.assert_close(lat, plain.sample(3, steps=3, generator=gen(0), progress=False))
    assert not any(k.startswith("autoencoder") for k in fm.state_dict())


def test_flow_sampler_options():
    fm = FlowMatching(Recorder(tiny_unet()))
    a = fm.sample(2, generator=gen(0), progress=False)
    assert len(fm.net.calls) == DEFAULT_EULER_STEPS
    b = fm.sample(2, generator=gen(0), progress=False, sampler="ddim", eta=0.0, clip=False)
    torch.testing.assert_close(a, b)  # "ddim" is the Euler sampler's alias; pixel samples are not clamped by default
    c = fm.sample(2, generator=gen(0), progress=False, clip=True)
    torch.testing.assert_close(c, a.clamp(-1, 1))
    x, traj = fm.sample((2, LC, LH, LH), steps=3, generator=gen(0), progress=False, return_trajectory=True)
    assert traj.shape == (4, 2, LC, LH, LH)
    torch.testing.assert_close(traj[-1], x)
    torch.testing.assert_close(traj[0], torch.randn(2, LC, LH, LH, generator=gen(0)))


# ---------------------------------------------------------------------------------- latent diffusion
@pytest.mark.parametrize("parameterization", ["eps", "v", "x0"])
def test_latent_diffusion_loss_is_ddpm_on_the_encoded_latents(process, parameterization):
    ae, net = tiny_ae(), tiny_unet()
    method = LatentDiffusion(net, process, ae, parameterization=parameterization)
    x = images(0)
    out = method.loss(x, generator=gen(11))
    assert set(out) == {"loss", "mse"}
    with torch.no_grad():
        z0 = ae.encode(x)
        ref = DDPM(net, process, parameterization).loss(z0, generator=gen(11))
    torch.testing.assert_close(out["mse"], ref["mse"])
    # and written out: t ~ U{0..T-1}, eps ~ N(0, I), z_t = sqrt(abar) z0 + sqrt(1 - abar) eps
    g = gen(11)
    t = torch.randint(0, T, (B,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    abar = process.alphas_cumprod[t].float()[:, None, None, None]
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    target = {"eps": eps, "v": abar.sqrt() * eps - (1 - abar).sqrt() * z0, "x0": z0}[parameterization]
    with torch.no_grad():
        expected = (net(zt, t) - target).pow(2).mean()
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert method.data_shape == (LC, LH, LH)


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_lpl_enters_with_its_weight_and_gets_z0_hat_from_table_1(process, parameterization):
    ae, net = tiny_ae(), tiny_unet()
    tau = float(process.snr(torch.tensor([T // 4]))[0])
    lpl = RecordingLPL(tau=tau)
    method = LatentDiffusion(net, process, ae, lpl, lpl_weight=3.0, parameterization=parameterization)
    x = images(1, n=8)
    out = method.loss(x, generator=gen(2))
    assert set(out) == {"loss", "mse", "lpl"}
    g = gen(2)
    t = torch.randint(0, T, (8,), generator=g)
    eps = torch.randn(8, LC, LH, LH, generator=g)
    with torch.no_grad():
        z0 = ae.encode(x)
    abar = process.alphas_cumprod[t].float()[:, None, None, None]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    zt = alpha * z0 + sigma * eps
    with torch.no_grad():
        d = net(zt, t)
    z0_hat = (zt - sigma * d) / alpha if parameterization == "eps" else alpha * zt - sigma * d
    (z_pred, z_target, snr), = lpl.calls
    torch.testing.assert_close(z_pred.detach(), z0_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z_target, z0)
    torch.testing.assert_close(snr, (abar / (1 - abar)).flatten())
    assert z_pred.requires_grad and not z_target.requires_grad
    gated = snr >= tau
    assert 0 < int(gated.sum()) < 8
    per = (z_pred.detach() - z0).pow(2).flatten(1).mean(1) * gated
    torch.testing.assert_close(out["lpl"], 3.0 * per.mean())
    torch.testing.assert_close(out["loss"].detach(), out["mse"] + out["lpl"])
    # the LPL's gradient reaches the network
    net.zero_grad()
    (out["loss"] - out["mse"]).backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_the_autoencoder_and_a_module_lpl_are_frozen(process):
    ae = tiny_ae()
    lpl = ConvLPL(ae, tau=0.0)
    net = tiny_unet()
    method = LatentDiffusion(net, process, ae, lpl, lpl_weight=1.0, parameterization="v")
    assert all(k.startswith("net.") for k in method.state_dict())
    assert {id(p) for p in method.parameters()} == {id(p) for p in net.parameters()}
    ae_before = copy.deepcopy(ae.state_dict())
    lpl_before = copy.deepcopy(lpl.conv.state_dict())
    net_before = copy.deepcopy(net.state_dict())
    method.train()
    assert not ae.training and not lpl.training
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    for step in range(3):
        opt.zero_grad()
        out = method.loss(images(step), generator=gen(step))
        assert "lpl" in out and float(out["lpl"]) > 0
        out["loss"].backward()
        opt.step()
    assert all(p.grad is None for p in ae.parameters()) and all(p.grad is None for p in lpl.conv.parameters())
    for k, v in ae.state_dict().items():
        assert torch.equal(v, ae_before[k]), k
    for k, v in lpl.conv.state_dict().items():
        assert torch.equal(v, lpl_before[k]), k
    assert any(not torch.equal(v, net_before[k]) for k, v in net.state_dict().items())
    # an EMA copy shares the frozen autoencoder
    assert copy.deepcopy(method).autoencoder.net is ae


def test_a_kl_autoencoder_is_encoded_by_its_posterior_mean(process):
    ae = tiny_ae(kl=True)
    method = LatentDiffusion(tiny_unet(), process, ae)
    x = images(0)
    z1, z2 = method.encode(x), method.encode(x)
    assert torch.equal(z1, z2) and not z1.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(z1, ae.scale_factor * ae.encode_moments(x)[0])


def test_latent_sampling_decodes_to_clamped_images_and_never_clamps_latents(process):
    ae = tiny_ae()
    with torch.no_grad():
        ae.decoder.conv_out.weight.mul_(50.0)  # a decoder that overshoots [-1, 1]
    net = tiny_unet()
    method = LatentDiffusion(net, process, ae, parameterization="v")
    kw = {"sampler": "ddim", "steps": 5, "progress": False}
    imgs, lat, traj = method.sample(3, generator=gen(0), return_latents=True, return_trajectory=True, clip=True, **kw)
    assert imgs.shape == (3, C, H, H) and lat.shape == (3, LC, LH, LH) and traj.shape == (6, 3, LC, LH, LH)
    assert float(imgs.abs().max()) <= 1.0
    with torch.no_grad():
        raw = ae.decode(lat)
    assert float(raw.abs().max()) > 1.0  # so the clamp did something
    torch.testing.assert_close(imgs, raw.clamp(-1, 1))
    torch.testing.assert_close(method.sample(3, generator=gen(0), clip=False, **kw), raw)
    torch.testing.assert_close(method.sample(3, generator=gen(0), **kw), imgs)  # clamped by default
    # the latents are the process's own samples, not clamped (a config's clip=True means the images)
    ref = process.sample(net, (3, LC, LH, LH), parameterization="v", generator=gen(0), **kw)
    torch.testing.assert_close(lat, ref)
    assert float(lat.abs().max()) > 1.0


# ---------------------------------------------------------------------------------------- labels
def test_labels_dropout_and_guidance(process):
    ae = tiny_ae()
    y = torch.tensor([0, 1, 2, 1])
    for make in (lambda n, **kw: LatentDiffusion(n, process, ae, **kw),
                 lambda n, **kw: FlowMatching(n, autoencoder=ae, **kw)):
        rec = Recorder(tiny_unet(num_classes=3))
        out = make(rec).loss(images(0), y=y, generator=gen(0))
        assert torch.isfinite(out["loss"]) and torch.equal(rec.calls[-1][2]["y"], y)
        make(rec, cond_drop_prob=1.0).loss(images(0), y=y, generator=gen(0))
        assert torch.equal(rec.calls[-1][2]["y"], torch.full_like(y, 3))  # all replaced by the null class
        with pytest.raises(ValueError, match="null_class"):
            make(tiny_unet(), cond_drop_prob=0.5).loss(images(0), y=y)
    fm = FlowMatching(tiny_unet(num_classes=3), autoencoder=ae)
    labels = torch.tensor([0, 2])
    cond = fm.sample(2, steps=3, y=labels, generator=gen(0), progress=False)
    # guidance with w = 1 is the conditional model; w = 0 the unconditional one
    torch.testing.assert_close(fm.sample(2, steps=3, y=labels, guidance_scale=1.0, generator=gen(0), progress=False),
                               cond, atol=1e-5, rtol=0)
    uncond = fm.sample(2, steps=3, y=torch.full((2,), 3), generator=gen(0), progress=False)
    torch.testing.assert_close(fm.sample(2, steps=3, y=labels, guidance_scale=0.0, generator=gen(0), progress=False),
                               uncond, atol=1e-5, rtol=0)
    ld = LatentDiffusion(tiny_unet(num_classes=3), process, ae, parameterization="v")
    assert ld.sample(2, y=labels, guidance_scale=2.0, sampler="ddim", steps=3, generator=gen(0),
                     progress=False).shape == (2, C, H, H)


# ---------------------------------------------------------------------------------- argument errors
class Halves(nn.Module):
    """A network that returns half the channels it is given."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, t, **kw):
        return self.w * x[:, : x.shape[1] // 2]


def test_argument_errors(process):
    ae, net = tiny_ae(), tiny_unet()
    with pytest.raises(TypeError, match="encode"):
        LatentDiffusion(net, process, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="lpl must be a callable"):
        LatentDiffusion(net, process, ae, lpl=3.0)
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lpl_weight"):
            LatentDiffusion(net, process, ae, lpl=RecordingLPL(), lpl_weight=bad)
        with pytest.raises(ValueError, match="lpl_weight"):
            FlowMatching(net, RecordingLPL(), lpl_weight=bad)
    with pytest.raises(ValueError, match="parameterization"):
        LatentDiffusion(net, process, ae, parameterization="score")
    zero_snr = GaussianDiffusion(rescale_zero_terminal_snr(beta_schedule("linear", T)))
    with pytest.raises(ValueError, match="zero SNR"):
        LatentDiffusion(net, zero_snr, ae, parameterization="eps")
    LatentDiffusion(net, zero_snr, ae, parameterization="v")
    for bad in (0.0, -1000.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="time_scale"):
            FlowMatching(net, time_scale=bad)
    with pytest.raises(ValueError, match="time_scale"):
        FlowMatching(net, time_scale="1000")
    with pytest.raises(TypeError, match="nn.Module"):
        FlowMatching(lambda x, t: x)
    with pytest.raises(TypeError, match="encode"):
        FlowMatching(net, autoencoder=object())
    with pytest.raises(ValueError, match="cond_drop_prob"):
        FlowMatching(net, cond_drop_prob=1.5)
    fm = FlowMatching(net)
    with pytest.raises(ValueError, match="steps"):
        fm.sample(2, steps=0, progress=False)
    with pytest.raises(TypeError, match="steps"):
        fm.sample(2, steps="ddim25", progress=False)
    with pytest.raises(ValueError, match="sampler"):
        fm.sample(2, sampler="ddpm", progress=False)
    with pytest.raises(ValueError, match="eta"):
        fm.sample(2, eta=1.0, progress=False)
    with pytest.raises(ValueError, match="return_latents"):
        fm.sample(2, steps=1, return_latents=True, progress=False)
    with pytest.raises(ValueError, match="full shape"):
        FlowMatching(PointVelocity(torch.zeros(2), 1000.0)).sample(3, progress=False)
    with pytest.raises(ValueError, match="noise shape"):
        fm.sample(2, steps=1, noise=torch.zeros(3, LC, LH, LH), progress=False)
    with pytest.raises(ValueError, match="one loss per sample"):
        FlowMatching(net, lambda a, b, snr=None: (a - b).pow(2).mean()).loss(torch.randn(B, LC, LH, LH))
    with pytest.raises(ValueError, match="one loss per sample"):
        LatentDiffusion(net, process, ae, lambda a, b, snr=None: (a - b).pow(2).mean()).loss(images(0))
    with pytest.raises(ValueError, match="returned shape"):
        FlowMatching(Halves()).loss(torch.randn(B, LC, LH, LH))
    with pytest.raises(ValueError, match="returned shape"):
        LatentDiffusion(Halves(), process, ae).loss(images(0))
    with pytest.raises(ValueError, match=r"shape \[B, 3, H, W\]"):  # images the autoencoder cannot take
        LatentDiffusion(net, process, ae).loss(torch.randn(B, 1, H, H))
    with pytest.raises(TypeError, match="x0"):
        FlowMatching(net).loss([1.0, 2.0])


# ------------------------------------------------------------------------------------------ trainer
def test_both_methods_train_through_the_trainer(process):
    from pdlib.train import TrainConfig, Trainer

    ae = tiny_ae()
    before = copy.deepcopy(ae.state_dict())
    x = images(0, n=8)
    for method in (LatentDiffusion(tiny_unet(), process, ae, RecordingLPL(), lpl_weight=2.0),
                   FlowMatching(tiny_unet(), ConvLPL(ae), lpl_weight=2.0, autoencoder=ae)):
        trainer = Trainer(method, x, TrainConfig(steps=2, batch_size=4, device="cpu", progress=False, log_every=1))
        trainer.fit()
        assert all("lpl" in record for record in trainer.history), trainer.history
        assert trainer.model.sample(2, steps=2, generator=gen(0), progress=False).shape == (2, C, H, H)
    for k, v in ae.state_dict().items():
        assert torch.equal(v, before[k]), k
