"""The latent models' autoencoder (pdlib.nets.autoencoder) and its adversarial training
(pdlib.methods.autoencoder): shapes, the scale factor, the KL posterior, decoder features, the patch
discriminator, and the two training phases."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pdlib.data.shapes import shapes
from pdlib.methods.autoencoder import AutoEncoderTraining, diagonal_gaussian_kl
from pdlib.nets.autoencoder import AUTOENCODER_PRESETS, AutoEncoder, PatchDiscriminator
from pdlib.perceptual import LPIPS, FeatureDistance, SmallFeatureNet
from pdlib.train import Frozen, TrainConfig, Trainer


def images(n=4, channels=3, size=16, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny(**kw):
    """A small autoencoder for fast tests (8 channels on the first level)."""
    torch.manual_seed(0)
    return AutoEncoder(**{**dict(channels=8, norm_groups=4), **kw})


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", ["cpu-f2", "cpu-digits"])
def test_cpu_presets_encode_and_decode_shapes(name):
    ae = AutoEncoder.from_preset(name)
    cfg = AUTOENCODER_PRESETS[name]
    x = images(2, cfg["in_channels"])
    z = ae.encode(x)
    assert ae.factor == 2
    assert z.shape == (2, cfg["latent_channels"], 8, 8)
    assert ae.decode(z).shape == x.shape == ae(x).shape


@pytest.mark.parametrize("mult, factor", [((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_factors_2_4_8(mult, factor):
    ae = tiny(channel_mult=mult, latent_channels=3)
    assert ae.factor == factor
    x = images(2, size=32)
    z = ae.encode(x)
    assert z.shape == (2, 3, 32 // factor, 32 // factor)
    assert ae.decode(z).shape == x.shape
    rect = images(1, size=32)[..., :16]  # 32x16: any size divisible by the factor
    assert ae(rect).shape == rect.shape


def test_paper_presets():
    ae = AutoEncoder.from_preset("lddgan-cifar10")
    assert (ae.factor, ae.latent_channels, ae.kl) == (2, 4, False)
    assert ae.encode(images(1, size=32)).shape == (1, 4, 16, 16)  # CIFAR-10: 16x16x4 latents
    cfg = AUTOENCODER_PRESETS["lddgan-celeba256"]
    assert 2 ** (len(cfg["channel_mult"]) - 1) == 4 and cfg["latent_channels"] == 4
    assert AutoEncoder.from_preset("cpu-f2", kl=True).kl
    assert set(AutoEncoder.presets()) == {"lddgan-cifar10", "lddgan-celeba256", "cpu-f2", "cpu-digits"}


def test_invalid_arguments():
    for mult in [(1,), (1, 1, 1, 1, 1)]:  # factors 1 and 16
        with pytest.raises(ValueError, match="factor"):
            AutoEncoder(channel_mult=mult)
    with pytest.raises(ValueError, match="norm_groups"):
        AutoEncoder(channels=12, norm_groups=8)
    with pytest.raises(ValueError, match="preset"):
        AutoEncoder.from_preset("nope")
    ae = tiny(channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(images(1, size=18))
    with pytest.raises(ValueError, match="channels|shape"):
        ae.encode(images(1, channels=1))
    with pytest.raises(ValueError, match="shape"):
        ae.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="kl=True"):
        ae.encode(images(1), sample=True)
    with pytest.raises(ValueError, match="kl=True"):
        ae.encode_moments(images(1))


# ------------------------------------------------------------------------------ scale factor
def test_fit_scale_factor_gives_unit_std_and_is_saved():
    ae = tiny()
    x = images(8)
    ae.scale_factor.fill_(5.0)  # fitting again starts from the unscaled latents
    scale = ae.fit_scale_factor(x)
    assert scale == pytest.approx(float(ae.scale_factor)) and scale != 1.0
    assert float(ae.encode(x).detach().std()) == pytest.approx(1.0, rel=1e-4)
    state = ae.state_dict()
    assert float(state["scale_factor"]) == pytest.approx(scale)
    other = tiny()
    assert float(other.scale_factor) == 1.0
    other.load_state_dict(state)
    assert float(other.scale_factor) == pytest.approx(scale)
    torch.testing.assert_close(other.encode(x), ae.encode(x))


def test_reconstruction_and_decoder_features_do_not_depend_on_the_scale_factor():
    ae = tiny()
    x = images(4)
    rec, feats = ae(x), ae.decoder_features(ae.encode(x))
    ae.scale_factor.fill_(0.37)
    torch.testing.assert_close(ae.decode(ae.encode(x)), rec, rtol=0, atol=1e-5)
    for a, b in zip(ae.decoder_features(ae.encode(x)), feats):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # yet the latents themselves are scaled
    torch.testing.assert_close(ae.encode(x), 0.37 * ae.encoder(x))


# ------------------------------------------------------------------------------ KL posterior
@torch.no_grad()
def test_kl_posterior_sampling_and_means():
    ae = tiny(kl=True)
    ae.scale_factor.fill_(2.0)
    x = images(3)
    mean, logvar = ae.encode_moments(x)
    assert mean.shape == logvar.shape == (3, 4, 8, 8)
    torch.testing.assert_close(ae.encode(x), 2.0 * mean)  # sample=False: the posterior mean
    a = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    b = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(2))
    c = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c)
    # a posterior with mean 0.5 and standard deviation 0.5 everywhere: draws have those moments
    ae.encoder.conv_out.weight.zero_()
    ae.encoder.conv_out.bias.copy_(torch.tensor([0.5] * 4 + [math.log(0.25)] * 4))  # logvar = log 0.5^2
    draws = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(3)) / 2.0
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.06)
    assert float(draws.std()) == pytest.approx(0.5, abs=0.05)


def test_kl_formula():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    kl = diagonal_gaussian_kl(mean, logvar)
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert kl.shape == (5,)
    torch.testing.assert_close(kl, expected)
    assert (kl >= 0).all()
    assert torch.equal(diagonal_gaussian_kl(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)), torch.zeros(2))


# ------------------------------------------------------------------------------ decoder features
@pytest.mark.parametrize("mult", [(1, 2), (1, 2, 2)])
def test_decoder_features_rise_in_resolution_up_to_the_image(mult):
    ae = tiny(channel_mult=mult)
    x = images(2, size=32)
    z = ae.encode(x)
    feats = ae.decoder_features(z)
    assert len(feats) == len(mult) + 1
    sizes = [f.shape[-1] for f in feats]
    assert sizes[0] == z.shape[-1] and sizes[-1] == x.shape[-1]
    assert sizes == sorted(sizes) and sizes[1] == 2 * sizes[0]
    upscaling = [s // sizes[0] for s in sizes]  # what LPL's depth weights read
    assert upscaling[-1] == ae.factor
    assert [f.shape[1] for f in feats] == [8 * mult[-1]] + [8 * m for m in reversed(mult)]
    # the last map is what decode turns into the image
    dec = ae.decoder
    torch.testing.assert_close(dec.conv_out(torch.nn.functional.silu(dec.norm_out(feats[-1]))), ae.decode(z))
    # gradients reach z
    zg = z.detach().requires_grad_(True)
    ae.decoder_features(zg)[1].sum().backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ discriminator
def test_patch_discriminator_shapes():
    torch.manual_seed(0)
    assert PatchDiscriminator(channels=8, num_layers=2)(images(3, size=16)).shape == (3, 1, 2, 2)
    assert PatchDiscriminator(channels=8, num_layers=1)(images(3, size=8)).shape == (3, 1, 2, 2)
    assert PatchDiscriminator(1, channels=8, num_layers=1)(images(2, channels=1, size=6)).shape == (2, 1, 1, 1)
    # the 70x70 PatchGAN of pix2pix: 30x30 logits on 256x256 images
    assert PatchDiscriminator(channels=4)(images(1, size=256)).shape == (1, 1, 30, 30)
    with pytest.raises(ValueError, match="num_layers <= 2"):
        PatchDiscriminator(channels=8)(images(1, size=16))
    with pytest.raises(ValueError, match="shape"):
        PatchDiscriminator(channels=8, num_layers=1)(images(1, channels=1, size=8))


# ------------------------------------------------------------------------------ training
def make_method(**kw):
    torch.manual_seed(0)
    return AutoEncoderTraining(AutoEncoder(channels=16, norm_groups=4),
                               PatchDiscriminator(channels=16, num_layers=2), **kw)


def test_training_reduces_the_held_out_reconstruction_error():
    data = shapes(512, size=16, generator=torch.Generator().manual_seed(0))
    held_out = shapes(128, size=16, generator=torch.Generator().manual_seed(1))
    method = make_method(adv_start=50)
    before = float((method.reconstruct(held_out) - held_out).abs().mean())
    trainer = Trainer(method, data, TrainConfig(steps=150, batch_size=32, lr=1e-3, ema_decay=None, device="cpu",
                                                progress=False, log_every=50))
    history = trainer.fit()
    after = float((method.reconstruct(held_out) - held_out).abs().mean())
    assert after < before / 3, (before, after)
    assert {"AE/l1", "AE/adv", "D/d_real", "D/d_fake", "D/loss"} <= set(history[-1])


def test_each_phase_updates_only_its_network_and_no_adversary_before_adv_start():
    method = make_method(adv_start=3)
    trainer = Trainer(method, shapes(64, size=16, generator=torch.Generator().manual_seed(0)),
                      TrainConfig(steps=6, batch_size=8, lr=1e-3, device="cpu", progress=False, log_every=1))
    assert trainer.optimizers["AE"].param_groups[0]["betas"] == (0.5, 0.9)
    nets = {"AE": method.autoencoder, "D": method.discriminator}
    changed = []  # (optimiser, step, {network: changed?})

    def watch(name):
        opt = trainer.optimizers[name]
        step = opt.step

        def wrapped(*a, **k):
            before = {n: [p.detach().clone() for p in net.parameters()] for n, net in nets.items()}
            out = step(*a, **k)
            moved = {n: any(not torch.equal(b, p) for b, p in zip(before[n], net.parameters()))
                     for n, net in nets.items()}
            changed.append((name, trainer.step, moved))
            return out

        opt.step = wrapped

    watch("AE")
    watch("D")
    history = trainer.fit()
    assert [(name, step) for name, step, _ in changed] == [(n, s) for s in range(6) for n in ("AE", "D")]
    for name, step, moved in changed:
        if name == "AE":
            assert moved == {"AE": True, "D": False}, (name, step)
        else:  # the discriminator is left exactly as it is before adv_start
            assert moved == {"AE": False, "D": step >= 3}, (name, step)
    for record in history:
        adversarial = record["step"] > 3  # the record of step s is written after step s - 1
        assert ("AE/adv" in record) == adversarial
        assert (record["D/loss"] != 0) == adversarial
    # directly: no adversarial term and a zero D loss with a gradient before adv_start
    x = shapes(4, size=16, generator=torch.Generator().manual_seed(2))
    early = method.phase_loss("D", x, step=2, progress=0.0)
    assert early["loss"].requires_grad and float(early["loss"].detach()) == 0
    assert "adv" not in method.phase_loss("AE", x, step=2, progress=0.0)
    late = method.phase_loss("AE", x, step=3, progress=0.5)
    assert float(late["adv"]) != 0
    assert float(late["loss"].detach()) == pytest.approx(float(late["l1"] + late["adv"]), rel=1e-6)


def test_kl_term_perceptual_wrapping_and_one_channel_images():
    torch.manual_seed(0)
    net = SmallFeatureNet(in_channels=1, widths=(4, 8))
    method = AutoEncoderTraining(AutoEncoder.from_preset("cpu-digits", kl=True, channels=8, norm_groups=4),
                                 PatchDiscriminator(1, channels=8, num_layers=2), FeatureDistance(net),
                                 perceptual_weight=0.5, kl_weight=1e-2)
    assert isinstance(method.perceptual, Frozen)
    assert not any(k.startswith("perceptual") for k in method.state_dict())
    x = images(4, channels=1)
    out = method.phase_loss("AE", x, step=0, progress=0.0, generator=torch.Generator().manual_seed(0))
    assert {"l1", "perceptual", "kl", "adv"} <= set(out)
    assert float(out["kl"]) > 0 and float(out["perceptual"]) > 0
    assert float(out["loss"].detach()) == pytest.approx(sum(float(out[k]) for k in ("l1", "perceptual", "kl", "adv")), rel=1e-5)
    # LPIPS takes RGB: one-channel images are repeated to three channels
    rgb = AutoEncoderTraining(method.autoencoder, method.discriminator, LPIPS("vgg", pretrained=False))
    assert float(rgb.loss(x)["perceptual"]) > 0
    # sample: the decoder on N(0, I) latents of the training images' latent shape
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, method.autoencoder.latent_channels, 8, 8, generator=g)  # 16x16 images, f = 2
    torch.testing.assert_close(method.sample(3, generator=torch.Generator().manual_seed(0)),
                               method.autoencoder.decoder(z))
    with pytest.raises(ValueError, match="latent shape"):
        AutoEncoderTraining(AutoEncoder.from_preset("cpu-digits", channels=8, norm_groups=4),
                            PatchDiscriminator(1, channels=8, num_layers=2)).sample(2)
    torch.testing.assert_close(method.reconstruct(x), method.autoencoder(x))
