"""Tests of pdlib.nets.fixres.FixResCNN, Cas-DM's fixed-resolution refinement network phi_Fix-Res:
shapes at any size, zero initialisation, no dead parameters, dependence on t, no resampling anywhere,
parameter counts of the presets, argument errors."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdlib.nets.fixres import PRESETS, FixResCNN
from pdlib.nets.unet import UNet
from test_unet import randomize  # tests/ is on sys.path (no __init__.py)

SMALL = dict(channels=16, num_blocks=2, groups=4)


def inputs(b=2, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g)


def expected_parameters(in_c: int, out_c: int, ch: int, blocks: int, emb: int) -> int:
    """Parameters counted layer by layer: time MLP, input conv, residual blocks, output norm and conv."""
    time_mlp = (ch * emb + emb) + (emb * emb + emb)
    conv_in = in_c * ch * 9 + ch
    block = 2 * ch + (9 * ch * ch + ch) + (emb * ch + ch) + 2 * ch + (9 * ch * ch + ch)  # norm1 conv1 emb norm2 conv2
    return time_mlp + conv_in + blocks * block + 2 * ch + (ch * out_c * 9 + out_c)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("h, w", [(8, 8), (16, 16), (7, 9), (1, 1), (5, 13), (32, 32)])
def test_output_shape_at_any_size(h, w):
    net = FixResCNN(**SMALL)
    x, t = inputs(h=h, w=w)
    assert net(x, t).shape == (2, 4, h, w)  # C + 1 channels by default


def test_out_channels_and_in_channels():
    net = FixResCNN(in_channels=1, out_channels=5, **SMALL)
    x, t = inputs(c=1, h=6, w=10)
    assert net(x, t).shape == (2, 5, 6, 10)
    assert (net.in_channels, net.out_channels) == (1, 5)


def test_scalar_t_is_broadcast():
    net = randomize(FixResCNN(**SMALL))
    x, _ = inputs()
    torch.testing.assert_close(net(x, torch.tensor(300)), net(x, torch.tensor([300, 300])))


# ------------------------------------------------------------------------------- initialisation, gradients
def test_fresh_network_outputs_zeros():
    net = FixResCNN(**SMALL)
    x, t = inputs(h=7, w=9)
    out = net(x, t)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(net.conv_out.weight, torch.zeros_like(net.conv_out.weight))
    for block in net.blocks:
        assert not block.conv2.weight.any()


def test_no_dead_parameters_once_the_zero_init_is_broken():
    """The output conv and every block's second conv start at zero, one behind the other: the first backward
    reaches only the output conv, the second also the blocks' second convs and whatever lies on the
    identity skip path, the third every parameter. So from the third step on no parameter is dead."""
    torch.manual_seed(0)
    net = FixResCNN(**SMALL)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, t = inputs(b=4, h=8, w=8)
    target = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    reached: list[set[str]] = []
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x, t), target).backward()
        reached.append({n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        opt.step()
    names = {n for n, _ in net.named_parameters()}
    assert reached[0] == {"conv_out.weight", "conv_out.bias"}  # everything else sits behind a zero conv
    assert "blocks.0.conv1.weight" not in reached[1] and "blocks.1.conv2.weight" in reached[1]
    assert reached[2] == names, f"parameters without gradient: {sorted(names - reached[2])}"


def test_time_embedding_changes_the_output():
    net = randomize(FixResCNN(**SMALL))
    x, _ = inputs()
    a = net(x, torch.tensor([0, 0]))
    b = net(x, torch.tensor([700, 700]))
    assert (a - b).abs().max() > 1e-2 * a.abs().max()
    # and the time MLP receives a gradient through the blocks
    net.zero_grad()
    b.square().mean().backward()
    assert net.time_embed[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- fixed resolution
def resampling_outputs(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[str]:
    """Names of modules whose 4-D output does not have the input's height and width."""
    size, wrong, hooks = tuple(x.shape[2:]), [], []
    for name, module in net.named_modules():
        def hook(mod, args, out, name=name):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and tuple(out.shape[2:]) != size:
                wrong.append(name)
        hooks.append(module.register_forward_hook(hook))
    try:
        net(x, t)
    finally:
        for h in hooks:
            h.remove()
    return wrong


def test_every_layer_keeps_the_input_resolution():
    x, t = inputs(h=8, w=8)
    assert resampling_outputs(FixResCNN(**SMALL), x, t) == []
    assert resampling_outputs(FixResCNN(**SMALL), *inputs(h=7, w=9)) == []
    # the check does catch a network that resamples: the UNet downsamples to 4x4
    unet = UNet(image_size=8, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                norm_groups=4)
    assert "downsample.0" in resampling_outputs(unet, x, t)


def test_no_strided_convolution_and_no_pooling():
    for name in FixResCNN.presets():
        net = FixResCNN.from_preset(name)
        for m in net.modules():
            assert not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Upsample))
            if isinstance(m, nn.Conv2d):
                assert m.stride == (1, 1) and m.dilation == (1, 1) and m.padding == (m.kernel_size[0] // 2,) * 2
        for block in net.blocks:
            assert block.resample is None


def test_receptive_field_of_the_convolutions():
    """With the group norms' statistics frozen (one fixed mean and variance), an output pixel depends only
    on input pixels within ``receptive_field // 2``; measured with the Jacobian of one output pixel."""
    net = randomize(FixResCNN(**SMALL)).double()
    for m in net.modules():  # replace group norm by a fixed affine map so that only the convolutions mix pixels
        if isinstance(m, nn.GroupNorm):
            m.forward = lambda x, m=m: x * m.weight[None, :, None, None] + m.bias[None, :, None, None]
    size, centre = 21, 10
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    net(x, torch.tensor([5]))[0, :, centre, centre].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0) > 0, as_tuple=True)
    radius = net.receptive_field // 2
    assert radius == 2 * SMALL["num_blocks"] + 2
    assert int((rows - centre).abs().max()) == radius and int((cols - centre).abs().max()) == radius


# ------------------------------------------------------------------------------------ presets, counts
def test_parameter_count_formula():
    for kw in [dict(), SMALL, dict(in_channels=1, out_channels=3, channels=24, num_blocks=3, time_embed_dim=40,
                                    groups=6)]:
        net = FixResCNN(**kw)
        assert n_params(net) == expected_parameters(net.in_channels, net.out_channels, net.channels, net.num_blocks,
                                                    net.time_embed_dim)


@pytest.mark.parametrize("name, low, high", [("cpu", 80_000, 100_000), ("casdm-cifar10", 3_000_000, 3_500_000)])
def test_preset_parameter_counts(name, low, high):
    kw = PRESETS[name]
    expected = expected_parameters(3, 4, kw["channels"], kw["num_blocks"], kw["time_embed_dim"])
    assert low <= expected <= high  # cpu: 91,108; casdm-cifar10: 3,227,908
    net = FixResCNN.from_preset(name)
    assert n_params(net) == expected


def test_preset_overrides_and_cpu_forward():
    net = FixResCNN.from_preset("cpu", in_channels=1)
    for h, w in [(8, 8), (16, 16)]:
        x, t = inputs(c=1, h=h, w=w)
        assert net(x, t).shape == (2, 2, h, w)


# -------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    (dict(in_channels=0), "in_channels"),
    (dict(out_channels=0), "out_channels"),
    (dict(channels=0), "channels"),
    (dict(num_blocks=0), "num_blocks"),
    (dict(time_embed_dim=0), "time_embed_dim"),
    (dict(groups=0), "groups"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(channels=30, groups=8), "multiple of groups"),
    (dict(channels=16, groups=16), "t is ignored"),
])
def test_bad_arguments_raise_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        FixResCNN(**kw)


def test_bad_inputs_and_preset_names():
    net = FixResCNN(**SMALL)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="dimensions"):
        net(torch.randn(3, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"t must have shape \[B\]"):
        net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="preset"):
        FixResCNN.from_preset("casdm-cifar100")
    with pytest.raises(TypeError, match="channels must be an int"):
        FixResCNN(channels=32.0)


# ------------------------------------------------------------------------------ as Cas-DM's phi
def test_trains_as_casdm_phi():
    casdm = pytest.importorskip("pdlib.methods.casdm")
    from pdlib.diffusion import GaussianDiffusion
    from pdlib.schedules import linear_betas

    torch.manual_seed(0)
    theta = UNet(image_size=8, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                 norm_groups=4)
    phi = FixResCNN(**SMALL)
    method = casdm.CasDM(theta, phi, GaussianDiffusion(linear_betas(100)))
    out = method.loss(torch.rand(4, 3, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert phi.conv_out.weight.grad.abs().sum() > 0
