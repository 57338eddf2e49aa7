"""Tests of pdlib.nets.unet.UNet: shapes, published parameter counts, zero initialisation, conditioning,
feature maps, errors, mixed precision, and equality with diffusers' UNet2DModel given the same weights."""

import math
import re

import diffusers
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D

from pdlib.nets.unet import PRESETS, ResBlock, UNet


@pytest.fixture(autouse=True)
def one_thread():
    """Small networks run fastest on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = dict(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,))


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every parameter (the zero-initialised ones included) by random values of a sensible scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def inputs(b=2, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, size, size, generator=g), torch.randint(0, 1000, (b,), generator=g)


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("kw, out_ch", [
    (dict(), 3),
    (dict(out_channels=7), 7),
    (dict(channel_mult=(1, 2, 2), attention_resolutions=(4, 8), num_head_channels=16, use_scale_shift_norm=True), 3),
    (dict(resblock_updown=True, num_res_blocks=2, dropout=0.1), 3),
    (dict(in_channels=1, num_classes=10, attention_resolutions=()), 1),
])
def test_output_shape(kw, out_ch):
    net = UNet(**{**SMALL, **kw})
    x, t = inputs(c=net.in_channels)
    assert net(x, t).shape == (2, out_ch, 16, 16)
    assert net.data_shape == (net.in_channels, 16, 16)


def test_non_square_input_of_divisible_size():
    net = UNet(**SMALL)
    assert net(torch.randn(1, 3, 16, 24), torch.tensor([3])).shape == (1, 3, 16, 24)


def test_timesteps_int_float_and_scalar_agree():
    net = randomize(UNet(**SMALL)).eval()
    x, _ = inputs()
    t = torch.tensor([5, 5])
    out = net(x, t)
    torch.testing.assert_close(net(x, t.float()), out)
    torch.testing.assert_close(net(x, torch.tensor(5)), out)


# ------------------------------------------------------------------------------- parameter counts
def count(preset: str, **kw) -> int:
    with torch.device("meta"):  # no memory, no initialisation: counting only
        return sum(p.numel() for p in UNet.from_preset(preset, **kw).parameters())


def test_ddpm_cifar10_parameter_count():
    n = count("ddpm-cifar10")
    assert abs(n - 35.7e6) / 35.7e6 < 0.01  # Ho et al. (2020), appendix B
    assert n == 35_746_307  # the count of google/ddpm-cifar10-32 (diffusers' UNet2DModel, same config)


def test_preset_list_and_overrides():
    assert set(UNet.presets()) == set(PRESETS) >= {"ddpm-cifar10", "improved-cifar10", "celeba64", "cpu-small"}
    assert 0.5e6 < count("cpu-small") < 0.7e6
    small = UNet.from_preset("cpu-small", out_channels=4)
    assert small.out_channels == 4 and small.data_shape == (3, 16, 16)
    with torch.device("meta"):
        assert UNet.from_preset("celeba64").data_shape == (3, 64, 64)
        improved = UNet.from_preset("improved-cifar10")
    assert improved.mid_attn.heads == 4 and improved.mid_res1.scale_shift
    assert count("improved-cifar10") > count("ddpm-cifar10")  # 3 blocks per level instead of 2


# ---------------------------------------------------------------------------------- initialisation
def test_fresh_network_outputs_zeros():
    net = UNet(**{**SMALL, "num_classes": 3})
    x, t = inputs()
    assert torch.equal(net(x, t, y=torch.tensor([0, 2])), torch.zeros(2, 3, 16, 16))


def test_time_embedding_changes_output():
    net = randomize(UNet(**SMALL)).eval()
    x, _ = inputs()
    x = x[:1].expand(2, -1, -1, -1)
    out = net(x, torch.tensor([0, 700]))
    assert (out[0] - out[1]).abs().max() > 1e-3
    torch.testing.assert_close(net(x, torch.tensor([700, 700]))[0], out[1])


# ------------------------------------------------------------------------------ class conditioning
def test_class_conditioning_and_null_class():
    net = randomize(UNet(**{**SMALL, "num_classes": 3})).eval()
    assert net.null_class == 3 and UNet(**SMALL).null_class is None
    x, t = inputs()
    torch.testing.assert_close(net(x, t), net(x, t, y=torch.tensor([3, 3])))
    a, b = net(x, t, y=torch.tensor([0, 0])), net(x, t, y=torch.tensor([1, 1]))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="labels must lie"):
        net(x, t, y=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="no labels"):
        UNet(**SMALL)(x, t, y=torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------- features
def test_feature_names_and_shapes():
    net = UNet(**{**SMALL, "channel_mult": (1, 2, 2), "attention_resolutions": (4,)})
    assert net.layer_names == ("enc0", "enc1", "enc2", "mid", "dec2", "dec1", "dec0")
    x, t = inputs()
    f = net.features(x, t, layers=net.layer_names)
    assert set(f) == set(net.layer_names)
    expected = {"enc0": (32, 16), "enc1": (64, 8), "enc2": (64, 4), "mid": (64, 4)}
    for name, (c, s) in expected.items():
        assert f[name].shape == (2, c, s, s)
        if name.startswith("enc"):
            assert f["dec" + name[3:]].shape == (2, c, s, s)
    assert set(net.features(x, t, "mid")) == {"mid"}


def test_last_decoder_feature_feeds_the_output_head():
    net = randomize(UNet(**SMALL)).eval()
    x, t = inputs()
    h = net.features(x, t, ("dec0",))["dec0"]
    torch.testing.assert_close(net.conv_out(torch.nn.functional.silu(net.norm_out(h))), net(x, t))


def test_features_stop_early():
    net = UNet(**SMALL)
    called = []
    net.mid_res1.register_forward_hook(lambda *a: called.append("mid"))
    net.up[0].res[0].register_forward_hook(lambda *a: called.append("dec"))
    x, t = inputs()
    net.features(x, t, ("enc1",))
    assert called == []
    net.features(x, t, ("mid",))
    assert called == ["mid"]


def test_gradient_flows_through_features():
    net = randomize(UNet(**SMALL))
    x, t = inputs()
    x.requires_grad_(True)
    net.features(x, t, ("mid",))["mid"].square().mean().backward()
    assert x.grad.abs().sum() > 0
    for p in [net.conv_in.weight, net.down[0].res[0].conv1.weight, net.mid_res2.conv2.weight]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert net.conv_out.weight.grad is None  # not part of the mid-block graph


# ------------------------------------------------------------------------------------------ errors
def test_input_errors():
    net = UNet(**SMALL)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.randn(2, 1, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(2, 3, 15, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="4 dimensions"):
        net(torch.randn(3, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(2, 3, 16, 16), torch.zeros(3))
    with pytest.raises(ValueError, match="dec0"):
        net.features(torch.randn(2, 3, 16, 16), torch.zeros(2), ("middle",))


def test_constructor_errors():
    with pytest.raises(ValueError, match="cpu-small"):
        UNet.from_preset("ddpm-imagenet")
    with pytest.raises(ValueError, match="divisible"):
        UNet(**{**SMALL, "image_size": 18, "channel_mult": (1, 2, 2)})
    with pytest.raises(ValueError, match="level size"):
        UNet(**{**SMALL, "attention_resolutions": (4,)})
    with pytest.raises(ValueError, match="multiples of norm_groups=32"):
        UNet(**{**SMALL, "model_channels": 48})
    with pytest.raises(ValueError, match="multiples of norm_groups=5"):
        UNet(**{**SMALL, "norm_groups": 5})
    with pytest.raises(ValueError, match="heads"):
        UNet(**{**SMALL, "num_heads": 3})


# ---------------------------------------------------------------- mixed precision, memory format
def test_autocast_bf16_close_to_fp32():
    net = randomize(UNet(**SMALL)).eval()
    x, t = inputs()
    ref = net(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 0.03


def test_bfloat16_weights_close_to_fp32():
    net = randomize(UNet(**{**SMALL, "num_classes": 2})).eval()
    x, t = inputs()
    ref = net(x, t)
    out = net.to(torch.bfloat16)(x.bfloat16(), t)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 0.05


def test_channels_last_matches_contiguous():
    net = randomize(UNet(**SMALL)).eval()
    x, t = inputs()
    ref = net(x, t)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last), t), ref,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------ independent reference: diffusers' UNet2DModel
def to_diffusers_state(state: dict) -> dict:
    """Rename pdlib UNet weights to diffusers UNet2DModel names (splitting the fused qkv projection)."""
    rules = [(r"^time_embed\.0\.", "time_embedding.linear_1."), (r"^time_embed\.2\.", "time_embedding.linear_2."),
             (r"^label_embed\.", "class_embedding."), (r"^norm_out\.", "conv_norm_out."),
             (r"^down\.(\d+)\.res\.", r"down_blocks.\1.resnets."),
             (r"^down\.(\d+)\.attn\.", r"down_blocks.\1.attentions."),
             (r"^up\.(\d+)\.res\.", r"up_blocks.\1.resnets."), (r"^up\.(\d+)\.attn\.", r"up_blocks.\1.attentions."),
             (r"^downsample\.(\d+)\.", r"down_blocks.\1.downsamplers.0."),
             (r"^upsample\.(\d+)\.", r"up_blocks.\1.upsamplers.0."),
             (r"^mid_res1\.", "mid_block.resnets.0."), (r"^mid_res2\.", "mid_block.resnets.1."),
             (r"^mid_attn\.", "mid_block.attentions.0."),
             (r"\.emb\.", ".time_emb_proj."), (r"\.skip\.", ".conv_shortcut."),
             (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."), (r"\.proj\.", ".to_out.0.")]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        if ".qkv." in key:
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[key.replace("qkv", name)] = part
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("scale_shift, head_channels, updown", [(False, None, False), (True, 16, False),
                                                               (False, None, True), (True, 16, True)])
def test_matches_diffusers_unet2d_with_same_weights(scale_shift, head_channels, updown):
    """Also with resblock_updown: diffusers' resnet down/upsamplers are ResnetBlock2D(down/up=True)."""
    net = randomize(UNet(**{**SMALL, "num_classes": 3, "use_scale_shift_norm": scale_shift,
                            "num_head_channels": head_channels, "resblock_updown": updown})).eval()
    blocks = (dict(down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
                   downsample_type="resnet", upsample_type="resnet") if updown else
              dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D")))
    ref = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=32, norm_eps=1e-5, attention_head_dim=head_channels, downsample_padding=1,
        flip_sin_to_cos=True, freq_shift=0, num_class_embeds=4, attn_norm_num_groups=32,
        resnet_time_scale_shift="scale_shift" if scale_shift else "default", **blocks).eval()
    ref.load_state_dict(to_diffusers_state(net.state_dict()), strict=True)
    x, t = inputs()
    y = torch.tensor([1, 3])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y), ref(x, t, class_labels=y).sample, rtol=1e-4, atol=1e-4)


# ------------------------------------------- residual up/down blocks (resblock_updown): resampling
def resblock_to_diffusers(block: ResBlock, scale_shift: bool) -> ResnetBlock2D:
    """diffusers' ResnetBlock2D with ``block``'s weights: norm1, conv1, emb -> time_emb_proj, norm2, conv2,
    skip -> conv_shortcut. Its default resampling (``kernel=None``) is Downsample2D(use_conv=False),
    2x2 average pooling, and Upsample2D(use_conv=False), nearest 2x: the same as Dhariwal & Nichol's."""
    ref = ResnetBlock2D(in_channels=block.conv1.in_channels, out_channels=block.conv1.out_channels,
                        temb_channels=block.emb.in_features, groups=32, eps=block.norm1.eps,
                        time_embedding_norm="scale_shift" if scale_shift else "default",
                        up=block.resample == "up", down=block.resample == "down").eval()
    state = {}
    for key, value in block.state_dict().items():
        name, _, leaf = key.partition(".")
        state[{"emb": "time_emb_proj", "skip": "conv_shortcut"}.get(name, name) + "." + leaf] = value
    ref.load_state_dict(state, strict=True)
    return ref


@pytest.mark.parametrize("resample", ["down", "up"])
@pytest.mark.parametrize("scale_shift", [False, True])
@pytest.mark.parametrize("in_ch, out_ch", [(32, 32), (32, 64)])
def test_resample_resblock_matches_diffusers_resnetblock2d(resample, scale_shift, in_ch, out_ch):
    block = randomize(ResBlock(in_ch, out_ch, 48, 0.0, scale_shift, resample=resample), seed=1).eval()
    assert isinstance(block.skip, torch.nn.Identity) == (in_ch == out_ch)
    ref = resblock_to_diffusers(block, scale_shift)
    g = torch.Generator().manual_seed(2)
    x, emb = torch.randn(2, in_ch, 8, 8, generator=g), torch.randn(2, 48, generator=g)
    with torch.no_grad():
        # pdlib's blocks receive the embedding after the UNet's shared SiLU; diffusers' apply it themselves
        out = block(x, F.silu(emb))
        expected = ref(x, emb)
    size = 4 if resample == "down" else 16
    assert out.shape == expected.shape == (2, out_ch, size, size)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_resample_resblocks_average_and_repeat_2x2_windows():
    """A fresh block is its (identity) skip path: the down block's output is the mean of each 2x2 window
    (not its maximum, not a strided pick), the up block's output repeats each pixel over a 2x2 window."""
    windows = torch.tensor([[0.0, 0.0], [0.0, 4.0]])  # mean 1, max 4, top-left 0
    x = torch.cat([windows * (1 + k) for k in range(4)], dim=1)  # a 2x8 strip of windows
    x = torch.cat([x, -x.flip(-1)], dim=0)[None, None].expand(1, 32, 4, 8).contiguous()
    x = x + torch.arange(32.0)[None, :, None, None]  # different per channel
    emb = torch.randn(1, 16)
    down = ResBlock(32, 32, 16, 0.0, False, resample="down").eval()
    with torch.no_grad():
        out = down(x, emb)
    expected = x.unflatten(2, (2, 2)).unflatten(4, (4, 2)).mean(dim=(3, 5))
    assert out.shape == (1, 32, 2, 4)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))

    up = ResBlock(32, 32, 16, 0.0, True, resample="up").eval()
    with torch.no_grad():
        out = up(x, emb)
    assert out.shape == (1, 32, 8, 16)
    torch.testing.assert_close(out, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_norm_groups_reach_every_group_norm():
    net = UNet(**{**SMALL, "norm_groups": 8})
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    x = torch.randn(2, SMALL.get("in_channels", 3), SMALL["image_size"], SMALL["image_size"])
    assert net(x, torch.tensor([1, 2])).shape == x.shape
