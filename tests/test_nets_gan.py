"""Tests of pdlib.nets.gan: shapes of every preset, parameter counts, AdaGN, the mapping network, the
minibatch standard deviation, conditioning on z / t / the pair, gradient flow to every parameter, errors,
and the toy 2D networks."""

import pytest
import torch
import torch.nn.functional as F

from pdlib.nets.gan import (DISCRIMINATOR_PRESETS, GENERATOR_PRESETS, AdaGN, Discriminator, Generator,
                            MappingNetwork, MLPDiscriminator2D, MLPGenerator2D, PixelNorm, ToyDiscriminator,
                            ToyGenerator, minibatch_stddev)

SMALL_G = dict(image_size=16, channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
               z_dim=8, z_emb_dim=32, groups=4)


def count(net_cls, preset: str) -> int:
    with torch.device("meta"):  # no memory, no initialisation: counting only
        return sum(p.numel() for p in net_cls.from_preset(preset).parameters())


def g_inputs(net: Generator, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, *net.data_shape, generator=g), torch.randint(0, 4, (b,), generator=g),
            torch.randn(b, net.z_dim, generator=g))


# ------------------------------------------------------------------------------------ presets, shapes
@pytest.mark.parametrize("preset, b", [("cpu-small", 3), ("cpu-latent", 4), ("ddgan-cifar10", 1)])
def test_preset_shapes(preset, b):
    gen, disc = Generator.from_preset(preset), Discriminator.from_preset(preset)
    assert gen.data_shape == disc.data_shape
    x, t, z = g_inputs(gen, b)
    with torch.no_grad():
        x0 = gen(x, t, z=z)
        assert x0.shape == x.shape
        assert disc(x0, t, x).shape == (b,)


def test_preset_settings_and_counts():
    assert set(Generator.presets()) == set(GENERATOR_PRESETS) == set(Discriminator.presets()) == set(
        DISCRIMINATOR_PRESETS) == {"ddgan-cifar10", "ddgan-celeba256", "cpu-small", "cpu-latent"}
    # DDGAN's CIFAR-10 generator (NCSN++ with AdaGN, 128 channels) has about 48M parameters; ours leaves out
    # the input pyramid and the FIR resampling convolutions.
    assert 44e6 < count(Generator, "ddgan-cifar10") < 50e6
    assert 30e6 < count(Generator, "ddgan-celeba256") < 50e6
    assert 10e6 < count(Discriminator, "ddgan-cifar10") < 15e6
    assert count(Generator, "cpu-small") < 1e6 and count(Generator, "cpu-latent") < 1e6
    assert count(Discriminator, "cpu-small") < 1e6 and count(Discriminator, "cpu-latent") < 1e6
    with torch.device("meta"):
        big_g, big_d = Generator.from_preset("ddgan-celeba256"), Discriminator.from_preset("ddgan-celeba256")
        cifar = Generator.from_preset("ddgan-cifar10")
    assert big_g.data_shape == big_d.data_shape == (3, 256, 256)
    assert len(big_d.blocks) == 6 and len(Discriminator.from_preset("ddgan-cifar10").blocks) == 4
    assert cifar.z_dim == 100 and len(cifar.enc_res) == 4 and cifar.tanh
    assert len([m for m in cifar.mapping.net if isinstance(m, torch.nn.Linear)]) == 5  # nz -> 256, then n_mlp = 4
    latent = Generator.from_preset("cpu-latent")
    assert latent.data_shape == (4, 8, 8) and not latent.tanh
    wavelet = Generator.from_preset("cpu-small", in_channels=12, image_size=8)
    assert wavelet.data_shape == (12, 8, 8)


def test_out_channels_and_tanh():
    torch.manual_seed(0)
    plain = Generator(**SMALL_G, out_channels=5)
    squashed = Generator(**SMALL_G, out_channels=5, tanh=True)
    squashed.load_state_dict(plain.state_dict())
    x, t, z = g_inputs(plain)
    out = plain(x, t, z)
    assert out.shape == (2, 5, 16, 16)
    torch.testing.assert_close(squashed(x, t, z), torch.tanh(out))


@pytest.mark.parametrize("kw, blocks", [
    (dict(in_channels=4, image_size=8, channels=32), 4),
    (dict(image_size=16, channels=8), 4),
    (dict(image_size=64, channels=8, depth="large"), 4),
    (dict(image_size=8, channels=8, depth="large"), 1),
])
def test_discriminator_sizes(kw, blocks):
    disc = Discriminator(**kw)
    assert len(disc.blocks) == blocks
    x = torch.randn(2, *disc.data_shape)
    assert disc(x, torch.tensor([0, 3]), x).shape == (2,)


# ---------------------------------------------------------------------------------- building blocks
def test_pixel_norm():
    x = torch.randn(5, 7) * torch.arange(1.0, 6.0)[:, None]
    y = PixelNorm()(x)
    torch.testing.assert_close(y.pow(2).mean(1), torch.ones(5))
    torch.testing.assert_close(PixelNorm()(3 * x), y)


def test_mapping_network_layers():
    net = MappingNetwork(10, 32, num_layers=2)
    assert [type(m).__name__ for m in net.net] == ["PixelNorm", "Linear", "SiLU", "Linear", "SiLU", "Linear", "SiLU"]
    z = torch.randn(3, 10)
    assert net(z).shape == (3, 32)
    torch.testing.assert_close(net(5 * z), net(z))  # PixelNorm first: the scale of z does not matter


def test_adagn_starts_as_plain_group_norm():
    torch.manual_seed(0)
    norm = AdaGN(8, 6, groups=2)
    h = torch.randn(3, 8, 5, 5) * 4 + 2
    plain = F.group_norm(h, 2, eps=1e-6)
    torch.testing.assert_close(norm(h, torch.zeros(3, 6)), plain)
    with torch.no_grad():
        norm.style.weight.zero_()
    torch.testing.assert_close(norm(h, torch.randn(3, 6)), plain)


def test_adagn_scale_and_shift_follow_the_embedding():
    torch.manual_seed(0)
    norm = AdaGN(8, 6, groups=2)
    h = torch.randn(1, 8, 4, 4).expand(2, -1, -1, -1)
    emb = torch.randn(2, 6)
    out = norm(h, emb)
    assert (out[0] - out[1]).abs().max() > 1e-2
    scale, shift = norm.style(emb).chunk(2, dim=1)
    expected = F.group_norm(h, 2, eps=1e-6) * scale[:, :, None, None] + shift[:, :, None, None]
    torch.testing.assert_close(out, expected)
    # no affine parameters of its own: only the linear layer on the embedding
    assert [n for n, _ in norm.named_parameters()] == ["style.weight", "style.bias"]


def test_minibatch_stddev():
    h = torch.randn(6, 3, 2, 2)
    out = minibatch_stddev(h, group_size=4)  # 6 examples: groups of 3, example i in group i mod 2
    assert out.shape == (6, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], h)
    for i in range(2):
        members = h[i::2]
        expected = torch.sqrt(members.var(0, unbiased=False) + 1e-8).mean()
        torch.testing.assert_close(out[i::2, 3], expected.expand(3, 2, 2))
    pair = torch.randn(2, 3, 1, 1)
    std = minibatch_stddev(pair)[:, 3]
    torch.testing.assert_close(std, ((pair[0] - pair[1]).abs() / 2).mean().expand(2, 1, 1), atol=1e-4, rtol=1e-4)
    single = minibatch_stddev(torch.randn(1, 3, 2, 2))
    torch.testing.assert_close(single[:, 3], torch.full((1, 2, 2), 1e-4))  # one example: sqrt(0 + 1e-8)


# ---------------------------------------------------------------------------------------- conditioning
def test_generator_depends_on_z_t_and_x():
    torch.manual_seed(0)
    gen = Generator(**SMALL_G).eval()
    x, t, z = g_inputs(gen)
    out = gen(x, t, z)
    assert (gen(x, t, torch.randn_like(z)) - out).abs().max() > 1e-3
    assert (gen(x, t + 1, z) - out).abs().max() > 1e-3
    assert (gen(x + 0.5 * torch.randn_like(x), t, z) - out).abs().max() > 1e-3
    # each example uses its own z and t only (no mixing across the batch), and a scalar t broadcasts
    torch.testing.assert_close(gen(x[:1], t[:1], z[:1]), out[:1])
    torch.testing.assert_close(gen(x, torch.tensor(2), z), gen(x, torch.tensor([2, 2]), z))
    torch.testing.assert_close(gen(x, torch.tensor(2.0), z), gen(x, torch.tensor(2), z))


def test_discriminator_depends_on_both_images_and_t():
    torch.manual_seed(0)
    disc = Discriminator(in_channels=3, image_size=16, channels=8)
    g = torch.Generator().manual_seed(1)
    prev, xt = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    t = torch.tensor([1])
    out = disc(prev, t, xt)
    assert (disc(torch.randn_like(prev), t, xt) - out).abs().item() > 1e-4
    assert (disc(prev, t, torch.randn_like(xt)) - out).abs().item() > 1e-4
    assert (disc(prev, t + 2, xt) - out).abs().item() > 1e-4
    assert (disc(xt, t, prev) - out).abs().item() > 1e-4  # the order of the pair matters


# ------------------------------------------------------------------------------------------ gradients
def test_every_parameter_gets_a_gradient():
    """One backward pass through D(G(.)) reaches every parameter of both (DDP needs no unused ones)."""
    torch.manual_seed(0)
    gen = Generator(**SMALL_G, tanh=True)
    disc = Discriminator(in_channels=3, image_size=16, channels=8)
    x, t, z = g_inputs(gen, b=4)
    disc(gen(x, t, z=z), t, x).sum().backward()
    for net in (gen, disc):
        missing = [n for n, p in net.named_parameters() if p.grad is None]
        assert not missing, missing
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    # z reaches the output at initialisation: the mapping network and the AdaGN layers get non-zero gradients
    assert gen.mapping.net[1].weight.grad.abs().sum() > 0
    assert gen.enc_res[0][0].norm1.style.weight.grad.abs().sum() > 0


def test_discriminator_double_backward_for_r1():
    disc = Discriminator.from_preset("cpu-latent")
    real = torch.randn(3, 4, 8, 8, requires_grad=True)
    logits = disc(real, torch.tensor([0, 1, 2]), torch.randn(3, 4, 8, 8))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    grad.pow(2).sum().backward()
    # every weight shapes the input gradient; only the last bias (a constant offset of the logit) does not
    assert [n for n, p in disc.named_parameters() if p.grad is None] == ["linear.bias"]


# ---------------------------------------------------------------------------------------------- errors
def test_generator_input_errors():
    gen = Generator(**SMALL_G)
    x, t, z = g_inputs(gen)
    with pytest.raises(ValueError, match="latent z"):
        gen(x, t)
    with pytest.raises(ValueError, match="z must have shape"):
        gen(x, t, torch.randn(2, 9))
    with pytest.raises(ValueError, match="z must have shape"):
        gen(x, t, torch.randn(3, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        gen(torch.randn(2, 3, 8, 8), t, z)
    with pytest.raises(ValueError, match="x must have shape"):
        gen(torch.randn(2, 1, 16, 16), t, z)
    with pytest.raises(ValueError, match="t must have shape"):
        gen(x, torch.tensor([1, 2, 3]), z)
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        gen(x, 3, z)


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=12, channel_mult=(1, 2, 2, 2), attention_resolutions=()), "divisible by"),
    (dict(channels=24, groups=16), "multiples of groups"),
    (dict(attention_resolutions=(4,)), "not a level size"),
    (dict(channel_mult=()), "at least one"),
    (dict(dropout=1.0), "dropout"),
    (dict(z_dim=0), "z_dim"),
])
def test_generator_constructor_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Generator(**{**SMALL_G, **kw})


def test_discriminator_errors():
    with pytest.raises(ValueError, match="divisible by 8"):
        Discriminator(image_size=12)
    with pytest.raises(ValueError, match="4 \\* 2\\*\\*k"):
        Discriminator(image_size=48, depth="large")
    with pytest.raises(ValueError, match="depth"):
        Discriminator(depth="medium")
    with pytest.raises(ValueError, match="preset"):
        Discriminator.from_preset("nope")
    with pytest.raises(ValueError, match="preset"):
        Generator.from_preset("nope")
    disc = Discriminator(image_size=8, channels=8)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="x_prev must have shape"):
        disc(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), x)
    with pytest.raises(ValueError, match="same batch size"):
        disc(x[:1], torch.tensor([0]), x)
    with pytest.raises(ValueError, match="x_t must have shape"):
        disc(x, torch.tensor([0, 1]), torch.randn(2, 4, 8, 8))


# -------------------------------------------------------------------------------------------- toy nets
def test_toy_gan_pair():
    torch.manual_seed(0)
    gen, disc = ToyGenerator(z_dim=3, dim=2, hidden=16, depth=2), ToyDiscriminator(dim=2, hidden=16, depth=2)
    assert gen.data_shape == (2,) and gen.z_dim == 3
    assert sum(isinstance(m, torch.nn.Linear) for m in gen.net) == 3
    z = torch.randn(5, 3)
    logits = disc(gen(z))
    assert gen(z).shape == (5, 2) and logits.shape == (5,)
    logits.sum().backward()
    assert all(p.grad is not None for p in [*gen.parameters(), *disc.parameters()])
    with pytest.raises(ValueError, match="z must have shape"):
        gen(torch.randn(5, 2))
    with pytest.raises(ValueError, match="x must have shape"):
        disc(torch.randn(5, 3))


def test_toy_diffusion_gan_pair():
    torch.manual_seed(0)
    gen, disc = MLPGenerator2D(hidden=32, depth=2, z_dim=3), MLPDiscriminator2D(hidden=32, depth=2)
    x, t, z = torch.randn(4, 2), torch.tensor([0, 1, 2, 3]), torch.randn(4, 3)
    out = gen(x, t, z=z)
    assert out.shape == (4, 2) and gen.data_shape == (2,)
    assert (gen(x, t, torch.randn(4, 3)) - out).abs().max() > 1e-4
    assert (gen(x, t + 1, z) - out).abs().max() > 1e-4
    torch.testing.assert_close(gen(x, torch.tensor(1), z), gen(x, torch.ones(4, dtype=torch.long), z))
    logits = disc(out, t, x)
    assert logits.shape == (4,)
    assert (disc(out, t + 1, x) - logits).abs().max() > 1e-4
    assert (disc(out, t, torch.randn(4, 2)) - logits).abs().max() > 1e-4
    logits.sum().backward()
    assert all(p.grad is not None for p in [*gen.parameters(), *disc.parameters()])
    with pytest.raises(ValueError, match="latent z"):
        gen(x, t)
    with pytest.raises(ValueError, match="z must have shape"):
        gen(x, t, torch.randn(4, 2))
    with pytest.raises(ValueError, match="x_t must have shape"):
        disc(out, t, torch.randn(3, 2))
