"""GAN losses, R1, DDGAN's chain (real pairs, posterior sampling), weighted learning, wavelet and latent
variants, and short training runs whose samples are measurably close to the data."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdlib.diffusion import GaussianDiffusion
from pdlib.errors import NonFiniteLossError
from pdlib.methods.ddgan import DDGAN, LDDGAN, weighted_learning_weight
from pdlib.methods.gan import GAN, discriminator_loss, generator_loss, r1_penalty
from pdlib.schedules import beta_schedule
from pdlib.train import TrainConfig, Trainer


def ddgan_process(T=4):
    return GaussianDiffusion(beta_schedule("ddgan", T))


class PairD(nn.Module):
    """D(x_prev, t, x_t) for 2D points: a small MLP on the pair and a time embedding."""

    def __init__(self, dim=2, T=4):
        super().__init__()
        self.t = nn.Embedding(T, 16)
        self.net = nn.Sequential(nn.Linear(2 * dim + 16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, x_prev, t, x_t):
        return self.net(torch.cat([x_prev.flatten(1), x_t.flatten(1), self.t(t)], 1)).squeeze(1)


class ZeroG(nn.Module):
    """G(x_t, t, z) = a * x_t + b * z[:, :dim]; linear, so posterior statistics are known."""

    z_dim = 2

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.1))

    def forward(self, x, t, z=None):
        return self.a * x + self.b * z[:, : x.shape[1]]


# ------------------------------------------------------------------------------ weighted learning
def test_weighted_learning_curve():
    sig = lambda u: 1 / (1 + math.exp(-u))  # noqa: E731
    assert weighted_learning_weight(0, 100) == pytest.approx(1 - sig(-6))  # 0.9975
    assert weighted_learning_weight(100, 100) == pytest.approx(1 - sig(6))  # 0.0025
    assert weighted_learning_weight(50, 100) == pytest.approx(0.5)
    assert weighted_learning_weight(25, 100, delta=2.0) == pytest.approx(1 - sig(-1))
    w = [weighted_learning_weight(e, 40) for e in range(41)]
    assert all(a > b for a, b in zip(w, w[1:]))  # strictly decreasing
    for e in range(41):  # point-symmetric about the middle
        assert w[e] + w[40 - e] == pytest.approx(1.0)
    # S-shaped: flat at both ends, steepest in the middle
    steps = np.diff(w)
    assert abs(steps[0]) < abs(steps[19]) > abs(steps[-1])
    for bad in [(-1, 10), (11, 10), (1, 0), (1, 10, -1.0)]:
        with pytest.raises(ValueError):
            weighted_learning_weight(*bad)


# ------------------------------------------------------------------------------ GAN losses and R1
def test_gan_losses_are_the_cross_entropies():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-0.5, 1.5, 0.0])
    bce = F.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(3)) + bce(fake, torch.zeros(3))
    torch.testing.assert_close(discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(generator_loss(fake), bce(fake, torch.ones(3)))  # -log sigma(D)
    torch.testing.assert_close(generator_loss(fake, "minimax"), -bce(fake, torch.zeros(3)))  # log(1 - sigma(D))
    with pytest.raises(ValueError):
        generator_loss(fake, "wasserstein")


def test_r1_penalty_closed_forms():
    w = torch.tensor([0.3, -2.0, 1.5])
    x = torch.randn(5, 3, requires_grad=True)
    assert float(r1_penalty(x @ w, x)) == pytest.approx(float(w.pow(2).sum()), rel=1e-6)  # linear D
    x2 = torch.randn(7, 3, requires_grad=True)
    expected = float((2 * x2.detach()).pow(2).sum(1).mean())  # D = |x|^2 -> grad 2x
    assert float(r1_penalty(x2.pow(2).sum(1), x2).detach()) == pytest.approx(expected, rel=1e-6)
    # differentiable: the penalty's own gradient reaches the discriminator's weights
    lin = nn.Linear(3, 1)
    x3 = torch.randn(4, 3, requires_grad=True)
    r1_penalty(lin(x3).squeeze(1), x3).backward()
    torch.testing.assert_close(lin.weight.grad, 2 * lin.weight.detach())
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(lin(torch.randn(2, 3)).squeeze(1), torch.randn(2, 3))


# ------------------------------------------------------------------------------ the chain
def test_posterior_sampling_statistics():
    torch.manual_seed(0)
    method = DDGAN(ZeroG(), PairD(), ddgan_process(4))
    p = method.process
    x0, xt = torch.tensor([[0.7, -0.3]]), torch.tensor([[0.2, 1.1]])
    n = 200_000
    for i in range(4):
        t = torch.full((n,), i)
        draws = method.posterior_sample(x0.expand(n, 2), xt.expand(n, 2), t, torch.Generator().manual_seed(i))
        abar = p.alphas_cumprod[i]
        abar_prev = p.alphas_cumprod_prev[i]
        beta = p.betas[i]
        mean = (abar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abar_prev) * xt) / (1 - abar)
        var = (1 - abar_prev) / (1 - abar) * beta
        if i == 0:  # the last step returns the point x0 (up to float32 round-off of the coefficients)
            torch.testing.assert_close(draws, x0.expand(n, 2), atol=1e-6, rtol=0)
            continue
        torch.testing.assert_close(draws.mean(0, keepdim=True), mean.float(), atol=4 * float(var.sqrt()) / n**0.5 + 1e-4,
                                   rtol=0)
        assert draws.var(0).numpy() == pytest.approx([float(var)] * 2, rel=0.02)


def test_real_pairs_follow_the_forward_chain():
    method = DDGAN(ZeroG(), PairD(), ddgan_process(4))
    p = method.process
    n = 200_000
    x0 = torch.full((n, 1), 0.8)
    for i in range(4):
        prev, xt = method.real_pair(x0, torch.full((n,), i), torch.Generator().manual_seed(i))
        abar = float(p.alphas_cumprod[i])
        abar_prev = float(p.alphas_cumprod_prev[i])
        assert float(xt.mean()) == pytest.approx(0.8 * abar**0.5, abs=0.01)
        assert float(xt.var()) == pytest.approx(1 - abar, rel=0.02, abs=1e-4)
        if i == 0:
            assert torch.equal(prev, x0)
        else:
            assert float(prev.mean()) == pytest.approx(0.8 * abar_prev**0.5, abs=0.01)
            assert float(prev.var()) == pytest.approx(1 - abar_prev, rel=0.02)
        # x_t | x_{t-1}: regression slope sqrt(alpha_t), residual variance beta_t
        c = torch.cov(torch.stack([prev[:, 0], xt[:, 0]]))
        if i > 0:
            assert float(c[0, 1] / c[0, 0]) == pytest.approx(float(p.alphas[i]) ** 0.5, abs=0.01)
        resid = xt - float(p.alphas[i]) ** 0.5 * prev
        assert float(resid.var()) == pytest.approx(float(p.betas[i]), rel=0.02)


def test_sample_runs_T_generator_calls_with_fresh_z():
    calls = []

    class Spy(ZeroG):
        def forward(self, x, t, z=None):
            calls.append((int(t[0]), z.clone()))
            return super().forward(x, t, z)

    method = DDGAN(Spy(), PairD(), ddgan_process(4))
    x, chain = method.sample((6, 2), generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert [c[0] for c in calls] == [3, 2, 1, 0]
    assert all(not torch.equal(calls[0][1], c[1]) for c in calls[1:])
    assert x.shape == (6, 2) and chain.shape == (5, 6, 2)
    # the last step adds no noise: the output is G's x0' prediction from the last state
    torch.testing.assert_close(x, 0.5 * chain[-2] + 0.1 * calls[-1][1])
    with pytest.raises(ValueError, match="training steps"):
        method.sample((2, 2), steps=2)
    with pytest.raises(ValueError, match="full shape"):
        DDGAN(ZeroG(), PairD(), ddgan_process(4)).sample(3)


def test_phases_update_only_their_network_and_r1_is_lazy():
    torch.manual_seed(0)
    method = DDGAN(ZeroG(), PairD(), ddgan_process(4), r1_gamma=1.0, lazy_reg=3)
    x0 = torch.randn(16, 2)
    g = torch.Generator().manual_seed(0)
    out = method.phase_loss("G", x0, step=0, progress=0.0, generator=g)
    out["loss"].backward()
    assert all(p.grad is None for p in method.discriminator.parameters())
    assert all(p.grad is not None for p in method.generator.parameters())
    assert all(p.requires_grad for p in method.discriminator.parameters())  # flags restored
    method.zero_grad(set_to_none=True)
    out = method.phase_loss("D", x0, step=0, progress=0.0, generator=g)
    out["loss"].backward()
    assert all(p.grad is None for p in method.generator.parameters())
    assert "r1" in out and float(out["r1"]) > 0
    assert "r1" not in method.phase_loss("D", x0, step=1, progress=0.0, generator=g)
    assert "r1" in method.phase_loss("D", x0, step=3, progress=0.0, generator=g)


def test_reconstruction_weight_fixed_and_scheduled():
    x0 = torch.randn(32, 2)
    torch.manual_seed(0)
    fixed = DDGAN(ZeroG(), PairD(), ddgan_process(4), rec_weight=2.0)
    assert fixed.reconstruction_weight(0.9) == 2.0
    g = torch.Generator().manual_seed(0)
    a = fixed.phase_loss("G", x0, step=0, progress=0.0, generator=g)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    plain = DDGAN(ZeroG(), PairD(), ddgan_process(4)).phase_loss("G", x0, step=0, progress=0.0, generator=g)
    assert "rec" not in plain and float(a["rec"]) > 0
    # same draws: the adversarial parts agree and the total adds the weighted L1
    torch.testing.assert_close(a["adv"], plain["adv"])
    torch.testing.assert_close(a["loss"].detach(), a["adv"] + a["rec"])
    sched = DDGAN(ZeroG(), PairD(), ddgan_process(4), rec_schedule=lambda p: 1 - p)
    assert sched.reconstruction_weight(0.25) == 0.75
    with pytest.raises(ValueError):
        DDGAN(ZeroG(), PairD(), ddgan_process(4), rec_weight=1.0, rec_schedule=lambda p: p)
    with pytest.raises(TypeError, match="z_dim"):
        DDGAN(nn.Linear(2, 2), PairD(), ddgan_process(4))


def test_divergence_stops_with_a_clear_error(tmp_path):
    class Exploding(ZeroG):
        def forward(self, x, t, z=None):
            out = super().forward(x, t, z)
            return out * float("nan") if self.training and Exploding.armed else out

    Exploding.armed = False
    method = DDGAN(Exploding(), PairD(), ddgan_process(4))
    trainer = Trainer(method, torch.randn(64, 2), TrainConfig(steps=6, batch_size=8, device="cpu", progress=False,
                                                              checkpoint_path=str(tmp_path / "c.pt")))
    trainer.fit(3)
    good = {k: v.clone() for k, v in method.state_dict().items()}
    Exploding.armed = True
    with pytest.raises(NonFiniteLossError, match="phase 'D'.*refused"):
        trainer.fit()
    assert trainer.step == 3
    for k, v in method.state_dict().items():
        assert torch.equal(v, good[k]), k


# ------------------------------------------------------------------------------ training runs on toy data
EIGHT_CENTRES = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1], [0.7071, 0.7071], [0.7071, -0.7071],
                              [-0.7071, 0.7071], [-0.7071, -0.7071]])


def modes_covered(x, data):
    """Modes of the 8-Gaussian ring that hold >= 5 % of the samples, and the fraction near any mode."""
    centres = EIGHT_CENTRES * data.norm(dim=1).mean()
    d = torch.cdist(x, centres).min(1)
    near = d.values < 0.3 * centres.norm(dim=1).mean()
    return int((torch.bincount(d.indices[near], minlength=8) > 0.05 * len(x)).sum()), float(near.float().mean())


def test_toy_ddgan_four_steps_matches_the_data_where_a_gaussian_ddpm_cannot():
    from pdlib.data import toy2d
    from pdlib.methods import DDPM
    from pdlib.metrics.toy import sliced_wasserstein
    from pdlib.nets import MLP2D
    from pdlib.nets.gan import MLPDiscriminator2D, MLPGenerator2D

    data = toy2d("8gaussians", 20000, torch.Generator().manual_seed(0))
    ref = toy2d("8gaussians", 4000, torch.Generator().manual_seed(2))
    cfg = TrainConfig(steps=800, batch_size=128, device="cpu", progress=False, ema_decay=0.99, grad_clip=None,
                      lr=1e-3)
    torch.manual_seed(0)
    gan = DDGAN(MLPGenerator2D(z_dim=2), MLPDiscriminator2D(), ddgan_process(4), r1_gamma=0.05, lazy_reg=1,
                lr_g=1e-3, lr_d=1e-3)
    trainer = Trainer(gan, data, cfg)
    trainer.fit()
    x = trainer.model.sample((4000, 2), generator=torch.Generator().manual_seed(1))  # the generator's EMA
    torch.manual_seed(0)
    ddpm = DDPM(MLP2D(), ddgan_process(4))
    Trainer(ddpm, data, cfg).fit()
    y = ddpm.sample((4000, 2), generator=torch.Generator().manual_seed(1), progress=False)
    sw = lambda a: sliced_wasserstein(a, ref, generator=torch.Generator().manual_seed(0))  # noqa: E731
    floor = sw(toy2d("8gaussians", 4000, torch.Generator().manual_seed(3)))
    assert floor < 0.08
    assert sw(x) < 0.2  # measured 0.13 (floor 0.06)
    assert sw(y) > 0.3  # measured 0.38: four Gaussian steps blur the modes
    (modes_gan, near_gan), (_, near_ddpm) = modes_covered(x, data), modes_covered(y, data)
    assert modes_gan == 8 and near_gan > 0.65  # measured 0.75 (real data: 1.0)
    assert near_ddpm < near_gan - 0.2  # measured 0.38


def test_toy_gan_with_r1_covers_every_mode():
    from pdlib.data import toy2d
    from pdlib.metrics.toy import sliced_wasserstein
    from pdlib.nets.gan import ToyDiscriminator, ToyGenerator

    data = toy2d("8gaussians", 20000, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    gan = GAN(ToyGenerator(z_dim=2), ToyDiscriminator(), 2, r1_gamma=1.0, lr_g=1e-3, lr_d=1e-3)
    Trainer(gan, data, TrainConfig(steps=1000, batch_size=256, device="cpu", progress=False, ema_decay=None,
                                   grad_clip=None)).fit()
    x = gan.sample(4000, generator=torch.Generator().manual_seed(1))
    ref = toy2d("8gaussians", 4000, torch.Generator().manual_seed(2))
    assert sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0)) < 0.2  # measured 0.10
    assert modes_covered(x, data)[0] == 8
    with pytest.raises(ValueError, match="one step"):
        gan.sample(3, steps=4)


# ------------------------------------------------------------------------------ wavelet and latent variants
def test_wavelet_ddgan_runs_on_subbands_and_returns_images():
    from pdlib.nets.gan import Discriminator, Generator
    from pdlib.wavelets import haar_dwt

    torch.manual_seed(0)
    gen = Generator.from_preset("cpu-small", in_channels=12, image_size=8)
    disc = Discriminator.from_preset("cpu-latent", in_channels=12)
    method = DDGAN(gen, disc, ddgan_process(4), space="wavelet", rec_weight=1.0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(method.from_space(method.to_space(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(method.to_space(x), haar_dwt(x) / 2)
    # the LL band of images in [-1, 1] stays in [-1, 1] after the division by 2
    assert float(method.to_space(x)[:, :3].abs().max()) <= 1.0 + 1e-6
    out = method.phase_loss("G", x, step=0, progress=0.0, generator=torch.Generator().manual_seed(0))
    assert {"adv", "rec"} <= set(out) and method.data_shape == (12, 8, 8)
    samples = method.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 16, 16)


def test_lddgan_trains_in_the_frozen_autoencoders_latent_space():
    from pdlib.methods import LDDGAN as exported
    from pdlib.nets import AutoEncoder, Discriminator, Generator

    assert exported is LDDGAN
    torch.manual_seed(0)
    ae = AutoEncoder.from_preset("cpu-f2")
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    ae.fit_scale_factor(x)
    ae_before = {k: v.clone() for k, v in ae.state_dict().items()}
    method = LDDGAN(Generator.from_preset("cpu-latent"), Discriminator.from_preset("cpu-latent"), ddgan_process(4), ae)
    # the autoencoder is frozen: not in the method's weights, no gradient
    assert not any(k.startswith("autoencoder") for k in method.state_dict())
    torch.testing.assert_close(method.to_space(x), ae.encode(x))
    # weighted learning: the logged reconstruction term is lambda(progress) x L1 in latent space
    g = torch.Generator().manual_seed(0)
    trainer = Trainer(method, x, TrainConfig(steps=4, batch_size=4, device="cpu", progress=False, log_every=1))
    trainer.fit()
    for record in trainer.history:
        assert "G/rec" in record
    w = [weighted_learning_weight(s / 4, 1.0) for s in range(4)]
    out = method.phase_loss("G", x, step=2, progress=0.5, generator=g)
    assert method.reconstruction_weight(0.5) == pytest.approx(0.5) and w[0] > 0.99
    assert float(out["rec"]) > 0
    for k, v in ae.state_dict().items():
        assert torch.equal(v, ae_before[k]), k
    assert all(p.grad is None for p in ae.parameters())
    assert method.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 16, 16)
    # Table 6's other rows: adversarial loss alone, and a fixed reconstruction weight
    adv_only = LDDGAN(Generator.from_preset("cpu-latent"), Discriminator.from_preset("cpu-latent"), ddgan_process(4),
                      ae, weighted_learning=False)
    assert "rec" not in adv_only.phase_loss("G", x, step=0, progress=0.0)
    fixed = LDDGAN(Generator.from_preset("cpu-latent"), Discriminator.from_preset("cpu-latent"), ddgan_process(4), ae,
                   weighted_learning=False, rec_weight=1.0)
    assert fixed.reconstruction_weight(0.9) == 1.0
    with pytest.raises(ValueError, match="weighted learning"):
        LDDGAN(Generator.from_preset("cpu-latent"), Discriminator.from_preset("cpu-latent"), ddgan_process(4), ae,
               rec_weight=1.0)


def test_sample_clip_bounds_the_decoded_images():
    method = DDGAN(ZeroG(), PairD(), ddgan_process(4))
    with torch.no_grad():
        method.generator.a.fill_(3.0)  # overshoots
    x = method.sample((64, 2), generator=torch.Generator().manual_seed(0))
    assert float(x.abs().max()) > 1
    clipped = method.sample((64, 2), generator=torch.Generator().manual_seed(0), clip=True)
    torch.testing.assert_close(clipped, x.clamp(-1, 1))
