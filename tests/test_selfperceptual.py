"""The self-perceptual objective (Lin & Yang 2024, "Diffusion model with perceptual loss", section 3, section 5
and Algorithm 1): L_sp and L_sp2 against the paper's equations written out here, t' = t (eq. 13), the frozen
perceptual network (never trained, not saved, shared by copies, gradients flow through it), the option checks,
the t' distributions of Table 3, labels, zero terminal SNR, and the config builder with chained and resumed runs.
Tiny UNets on 8x8 images keep it fast."""

import copy
import json

import pytest
import torch
from torch import nn

from pdlib.config import load_config
from pdlib.diffusion import GaussianDiffusion
from pdlib.methods import DDPM, SelfPerceptual
from pdlib.methods.selfperceptual import LAYER_SETS, resolve_layers
from pdlib.nets.unet import UNet
from pdlib.pipeline import (
    build_method,
    export_weights,
    make_trainer,
    read_weights,
    resolve_weights,
    train_run,
)
from pdlib.schedules import beta_schedule, rescale_zero_terminal_snr
from pdlib.selfperceptual_runs import network_weights
from pdlib.train import load_checkpoint
from pdlib.train.frozen import Frozen

T = 50
B, C, H = 4, 3, 8


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(beta_schedule("linear", T))


def tiny_unet(seed=0, num_classes=None, channel_mult=(1, 2)):
    """A small UNet whose weights are all perturbed: a fresh UNet's zero output conv predicts exactly 0."""
    torch.manual_seed(seed)
    net = UNet(in_channels=C, model_channels=16, channel_mult=channel_mult, num_res_blocks=1,
               attention_resolutions=(), image_size=H, norm_groups=8, num_classes=num_classes)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def images(seed=0, n=B):
    return torch.randn(n, C, H, H, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def sp_method(process, *, online_seed=0, frozen_seed=1, num_classes=None, **kw):
    """An SP method whose online and frozen networks differ (so using the wrong one for the features shows)."""
    net, frozen = tiny_unet(online_seed, num_classes), tiny_unet(frozen_seed, num_classes)
    reference_frozen = copy.deepcopy(frozen)  # an unwrapped copy for the formulas written out here
    return SelfPerceptual(net, frozen, process, "v", **kw), reference_frozen


def state_of(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------ the paper's equations
def reference_loss(process, net, frozen, x0, seed, *, layers=("mid",), formulation="sp", distance="mse",
                   y_online=None, y_frozen=None):
    """L_sp (eq. 12) or L_sp2 (eq. 17) with v-prediction (eqs. 6-11), drawing t, eps and t' in the order
    ``SelfPerceptual.loss`` draws them (t, eps, then t' ~ U{0..T-1}) from a generator seeded ``seed``.
    Each layer's distance is computed by its own ``features`` call, and the layers' distances summed."""
    g = torch.Generator().manual_seed(seed)
    b = x0.shape[0]
    t = torch.randint(0, process.T, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    t2 = torch.randint(0, process.T, (b,), generator=g)

    def abar(tt):
        return process.alphas_cumprod[tt].to(x0.dtype).reshape(-1, 1, 1, 1)

    def forward(x, e, tt):  # eq. 2
        return abar(tt).sqrt() * x + (1 - abar(tt)).sqrt() * e

    xt = forward(x0, eps, t)
    v = net(xt, t, y=y_online) if y_online is not None else net(xt, t)
    x0_hat = abar(t).sqrt() * xt - (1 - abar(t)).sqrt() * v  # eq. 8
    eps_hat = abar(t).sqrt() * v + (1 - abar(t)).sqrt() * xt  # eq. 9
    dist = {"mse": lambda a, r: ((a - r) ** 2).mean(), "mae": lambda a, r: (a - r).abs().mean()}[distance]

    def feature(x, layer):
        return frozen.features(x, t2, [layer], y=y_frozen)[layer]

    real = forward(x0, eps, t2)  # eq. 10
    if formulation == "sp":
        preds = [forward(x0_hat, eps_hat, t2)]  # eq. 11
    else:
        preds = [forward(x0_hat, eps, t2), forward(x0, eps_hat, t2)]  # eqs. 15-16
    total = 0.0
    for pred in preds:
        for layer in layers:
            total = total + dist(feature(pred, layer), feature(real, layer).detach())
    v_true = abar(t).sqrt() * eps - (1 - abar(t)).sqrt() * x0  # eq. 3
    return total, ((v.detach() - v_true) ** 2).mean()


@pytest.mark.parametrize("formulation,distance", [("sp", "mse"), ("sp2", "mse"), ("sp", "mae"), ("sp2", "mae")])
def test_loss_matches_the_papers_equations(process, formulation, distance):
    method, frozen = sp_method(process, formulation=formulation, distance=distance)
    online_ref = copy.deepcopy(method.net)
    x0 = images()
    out = method.loss(x0, generator=torch.Generator().manual_seed(7))
    want, want_mse = reference_loss(process, online_ref, frozen, x0, 7, formulation=formulation, distance=distance)
    assert float(want.detach()) > 1e-4  # not a trivially zero comparison
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["mse"], want_mse, rtol=1e-5, atol=1e-7)
    # the gradient reaching the online network is the reference one
    out["loss"].backward()
    want.backward()
    for (name, p), q in zip(method.net.named_parameters(), online_ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)
    # a different generator seed draws different t, eps, t'
    other = method.loss(x0, generator=torch.Generator().manual_seed(8))["loss"]
    assert not torch.allclose(other, out["loss"])


def test_the_features_are_the_frozen_networks_not_the_online_ones(process):
    method, frozen = sp_method(process)
    x0 = images()
    got = method.loss(x0, generator=torch.Generator().manual_seed(3))["loss"]
    wrong, _ = reference_loss(process, copy.deepcopy(method.net), copy.deepcopy(method.net), x0, 3)
    right, _ = reference_loss(process, copy.deepcopy(method.net), frozen, x0, 3)
    torch.testing.assert_close(got, right, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, wrong, rtol=1e-3)


@pytest.mark.parametrize("parameterization", ["v", "eps", "x0"])
def test_t_prime_equal_to_t_gives_zero_sp_loss_but_not_sp2(process, monkeypatch, parameterization):
    x0 = images()
    losses = {}
    for formulation in ("sp", "sp2"):
        method = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, parameterization, formulation=formulation)
        monkeypatch.setattr(method, "draw_t_prime", lambda t, generator=None: t)
        losses[formulation] = method.loss(x0, generator=torch.Generator().manual_seed(0))["loss"]
    # eq. 13: forward(x0_hat, eps_hat, t) = x_t, so both inputs of f* coincide
    assert float(losses["sp"].detach()) == pytest.approx(0.0, abs=1e-6)
    # the split form still gives feedback at t' = t (section 5.4)
    assert float(losses["sp2"].detach()) > 1e-3


def test_sp_loss_is_zero_for_a_perfect_prediction(process):
    """A network that predicts the true v makes x0_hat = x0 and eps_hat = eps: L_sp = L_sp2 = 0."""

    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.v = None

        def forward(self, x, t):
            return self.scale * self.v

    x0 = images()
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, T, (B,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    for formulation in ("sp", "sp2"):
        oracle = Oracle()
        oracle.v = process.velocity(x0, eps, t)
        method = SelfPerceptual(oracle, tiny_unet(1), process, "v", formulation=formulation)
        out = method.loss(x0, generator=torch.Generator().manual_seed(5))
        assert float(out["loss"].detach()) == pytest.approx(0.0, abs=1e-9) and float(out["mse"]) < 1e-12


# ------------------------------------------------------------------------------------ the frozen network
def test_frozen_network_never_changes_and_gradients_flow_through_it(process):
    method, _ = sp_method(process, frozen_seed=0)  # as in the paper: f* starts as a copy of the online net
    inner = getattr(method.perceptual_net, "net", method.perceptual_net)
    before_frozen, before_online = state_of(inner), state_of(method.net)
    frozen_ids = {id(p) for p in inner.parameters()}
    assert frozen_ids.isdisjoint(id(p) for p in method.parameters())
    assert all(k.startswith("net.") for k in method.state_dict())
    assert not any("perceptual" in k for k in method.state_dict())
    assert set(method.state_dict()) == {f"net.{k}" for k in method.net.state_dict()}

    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        loss = method.loss(images(step), generator=gen)["loss"]
        assert float(loss.detach()) > 0
        loss.backward()
        if step == 0:  # the loss reaches the online net only through f*'s features
            assert method.net.conv_out.weight.grad is not None
            assert float(method.net.conv_out.weight.grad.abs().sum()) > 0
            assert all(p.grad is not None for p in method.net.parameters())
        opt.step()
    for k, v in inner.state_dict().items():
        assert torch.equal(v, before_frozen[k]), k
    for p in inner.parameters():
        assert p.grad is None and not p.requires_grad
    assert isinstance(method.perceptual_net, Frozen) and isinstance(inner, UNet)
    changed = [k for k, v in method.net.state_dict().items() if not torch.equal(v, before_online[k])]
    assert "conv_out.weight" in changed and len(changed) > len(before_online) // 2


def test_train_mode_and_deepcopy(process):
    method, _ = sp_method(process)
    inner = method.perceptual_net.net
    method.train()
    assert method.net.training
    assert not inner.training and not any(m.training for m in inner.modules())
    method.eval()
    method.train(True)
    assert not any(m.training for m in inner.modules())
    copied = copy.deepcopy(method)
    assert copied.perceptual_net is method.perceptual_net and copied.perceptual_net.net is inner
    assert copied.net is not method.net
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copied.net.parameters(), method.net.parameters()))


def test_an_already_frozen_network_is_kept(process):
    frozen = Frozen(tiny_unet(1))
    method = SelfPerceptual(tiny_unet(0), frozen, process)
    assert method.perceptual_net is frozen


def test_the_method_freezes_the_network_it_is_given(process):
    perceptual = tiny_unet(1)
    SelfPerceptual(tiny_unet(0), perceptual, process)
    assert not perceptual.training and not any(p.requires_grad for p in perceptual.parameters())


# ------------------------------------------------------------------------------------ options and errors
def test_argument_errors(process):
    net = tiny_unet(0)
    with pytest.raises(ValueError, match="copy"):
        SelfPerceptual(net, net, process)
    assert all(p.requires_grad for p in net.parameters())  # the online net was not frozen on the way
    other = tiny_unet(2)
    with pytest.raises(ValueError, match="copy"):
        SelfPerceptual(other, Frozen(other), process)
    with pytest.raises(TypeError, match="features"):
        SelfPerceptual(tiny_unet(0), nn.Conv2d(3, 3, 1), process)
    for kwargs, name in [({"layer": "middle"}, "layer"), ({"t_prime": "gauss"}, "t_prime"),
                         ({"distance": "l1"}, "distance"), ({"formulation": "sp3"}, "formulation"),
                         ({"parameterization": "score"}, "parameterization"), ({"near_offset": 0}, "near_offset"),
                         ({"normal_std": 0.0}, "normal_std"), ({"layer": ["mid", "bottleneck"]}, "bottleneck"),
                         ({"layer": []}, "layer")]:
        with pytest.raises(ValueError, match=name):
            SelfPerceptual(tiny_unet(0), tiny_unet(1), process, **kwargs)


def test_a_list_of_layer_names(process):
    method = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, layer=["enc1", "dec0"])
    assert method.layers == ("enc1", "dec0")
    assert float(method.loss(images(), generator=torch.Generator().manual_seed(0))["sp"]) > 0


def test_named_layer_sets():
    names = tiny_unet(0).layer_names
    assert names == ("enc0", "enc1", "mid", "dec1", "dec0")
    assert resolve_layers("mid", names) == ("mid",)
    assert resolve_layers("encoder", names) == ("enc0", "enc1")
    assert resolve_layers("decoder", names) == ("dec1", "dec0")
    assert resolve_layers("encoder+mid", names) == ("enc0", "enc1", "mid")
    assert resolve_layers(("dec0", "mid"), names) == ("dec0", "mid")
    deeper = UNet(model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(),
                  image_size=8, norm_groups=8).layer_names
    assert resolve_layers("encoder", deeper) == ("enc0", "enc1", "enc2")
    assert resolve_layers("decoder", deeper) == ("dec2", "dec1", "dec0")
    assert set(LAYER_SETS) == {"mid", "encoder", "decoder", "encoder+mid"}
    with pytest.raises(ValueError, match="layer"):
        resolve_layers("all", names)
    with pytest.raises(ValueError, match="enc5"):
        resolve_layers(["enc5"], names)


@pytest.mark.parametrize("layer", ["encoder", "decoder", "encoder+mid"])
def test_several_layers_sum_their_distances(process, layer):
    method, frozen = sp_method(process, layer=layer)
    online = copy.deepcopy(method.net)
    x0 = images()
    got = method.loss(x0, generator=torch.Generator().manual_seed(11))["loss"]
    layers = resolve_layers(layer, frozen.layer_names)
    want, _ = reference_loss(process, online, frozen, x0, 11, layers=layers)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    mid_only, _ = reference_loss(process, online, frozen, x0, 11)
    assert not torch.allclose(got, mid_only, rtol=1e-3)


# ------------------------------------------------------------------------------------ t' (Table 3)
def test_t_prime_uniform(process):
    method, _ = sp_method(process, t_prime="uniform")
    t = torch.full((5000,), 10)
    tp = method.draw_t_prime(t, torch.Generator().manual_seed(0))
    assert tp.dtype == torch.long and tp.shape == t.shape
    assert int(tp.min()) == 0 and int(tp.max()) == T - 1
    assert set(tp.tolist()) == set(range(T))
    counts = torch.bincount(tp, minlength=T).float()
    assert float(counts.min()) > 0.5 * 5000 / T  # roughly flat
    again = method.draw_t_prime(t, torch.Generator().manual_seed(0))
    assert torch.equal(tp, again)


def test_t_prime_near(process):
    method, _ = sp_method(process, t_prime="near", near_offset=7)
    t = torch.arange(T).repeat(40)
    tp = method.draw_t_prime(t, torch.Generator().manual_seed(0))
    assert tp.dtype == torch.long and int(tp.min()) >= 0 and int(tp.max()) <= T - 1
    middle = (t >= 7) & (t <= T - 8)
    d = (tp - t)[middle]
    assert set(d.tolist()) == {-7, 7}
    assert 0.35 < float((d > 0).float().mean()) < 0.65  # the sign is a fair coin
    assert set(tp[t == 0].tolist()) == {0, 7}  # t - 7 clamped to 0
    assert set(tp[t == 3].tolist()) == {0, 10}
    assert set(tp[t == T - 1].tolist()) == {T - 8, T - 1}  # t + 7 clamped to T - 1
    assert set(tp[t == T - 2].tolist()) == {T - 9, T - 1}


def test_t_prime_normal():
    process = GaussianDiffusion(beta_schedule("linear", 1000))
    method = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, t_prime="normal", normal_std=30.0)
    g = torch.Generator().manual_seed(0)
    t = torch.full((20000,), 500)
    tp = method.draw_t_prime(t, g)
    assert tp.dtype == torch.long and tp.shape == t.shape
    assert abs(float(tp.float().mean()) - 500) < 1.5
    assert float(tp.float().std()) == pytest.approx(30.0, rel=0.05)
    assert len(set(tp.tolist())) > 100  # integer-valued, but not a handful of values
    ends = method.draw_t_prime(torch.tensor([0] * 2000 + [999] * 2000), g)
    low, high = ends[:2000], ends[2000:]
    assert int(low.min()) == 0 and int(high.max()) == 999 and int(ends.max()) <= 999
    assert 0.4 < float((low == 0).float().mean()) < 0.6  # half the draws fall below 0 and are clamped
    assert 0.4 < float((high == 999).float().mean()) < 0.6
    wide = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, t_prime="normal", normal_std=80.0)
    assert float(wide.draw_t_prime(t, g).float().std()) == pytest.approx(80.0, rel=0.05)


# ------------------------------------------------------------------------------------ what loss returns
def test_loss_dict_and_its_mse_term(process):
    method, _ = sp_method(process)
    x0 = images()
    out = method.loss(x0, generator=torch.Generator().manual_seed(2))
    assert set(out) == {"loss", "sp", "mse"}
    assert out["loss"].requires_grad and out["loss"].ndim == 0
    assert not out["sp"].requires_grad and not out["mse"].requires_grad
    assert torch.equal(out["sp"], out["loss"].detach())
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, T, (B,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        v = method.net(process.q_sample(x0, t, eps), t)
    torch.testing.assert_close(out["mse"], (v - process.velocity(x0, eps, t)).pow(2).mean())
    assert float(out["mse"]) != pytest.approx(float(out["loss"].detach()), rel=1e-3)


def test_state_dict_loads_into_a_plain_ddpm(process):
    method, _ = sp_method(process)
    plain = DDPM(tiny_unet(5), process, "v")
    assert set(method.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(method.state_dict())  # strict
    x, t = images(), torch.tensor([0, 10, 20, 49])
    with torch.no_grad():
        torch.testing.assert_close(plain(x, t), method(x, t))
    method.load_state_dict(DDPM(tiny_unet(6), process, "v").state_dict())  # and back


# ------------------------------------------------------------------------------------ labels and zero SNR
def test_labels_reach_the_frozen_network(process):
    method, frozen = sp_method(process, num_classes=3)
    online = copy.deepcopy(method.net)
    x0 = images()
    y = torch.tensor([0, 1, 2, 1])
    got = method.loss(x0, y=y, generator=torch.Generator().manual_seed(4))["loss"]
    want, _ = reference_loss(process, online, frozen, x0, 4, y_online=y, y_frozen=y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    online_only, _ = reference_loss(process, online, frozen, x0, 4, y_online=y, y_frozen=None)
    assert not torch.allclose(got, online_only, rtol=1e-3)
    other = method.loss(x0, y=torch.tensor([2, 0, 1, 0]), generator=torch.Generator().manual_seed(4))["loss"]
    assert not torch.allclose(got, other, rtol=1e-3)


def test_zero_terminal_snr_at_the_last_step_is_finite(monkeypatch):
    process = GaussianDiffusion(rescale_zero_terminal_snr(beta_schedule("linear", 100)))
    assert float(process.alphas_cumprod[-1]) == 0.0
    last = process.T - 1
    real_randint = torch.randint
    for t_prime in ("uniform", "near"):
        method = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, "v", t_prime=t_prime, near_offset=3)
        calls = []

        def randint(*args, calls=calls, **kwargs):  # the first draw (t) is the last step, t' as usual
            calls.append(args)
            out = real_randint(*args, **kwargs)
            return torch.full_like(out, last) if len(calls) == 1 else out

        monkeypatch.setattr(torch, "randint", randint)
        out = method.loss(images(), generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(torch, "randint", real_randint)
        assert calls[0][:2] == (0, process.T)
        assert torch.isfinite(out["loss"]) and torch.isfinite(out["mse"]) and float(out["loss"].detach()) > 0
        out["loss"].backward()
        grads = [p.grad for p in method.net.parameters()]
        assert all(gr is not None and bool(torch.isfinite(gr).all()) for gr in grads)
        assert float(method.net.conv_out.weight.grad.abs().sum()) > 0
    # and t' at the last step too (f* sees pure noise: x_t' = eps, x_hat_t' = eps_hat = x_t)
    method = SelfPerceptual(tiny_unet(0), tiny_unet(1), process, "v")
    monkeypatch.setattr(method, "draw_t_prime", lambda t, generator=None: torch.full_like(t, last))
    out = method.loss(images(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in method.net.parameters())


# ------------------------------------------------------------------------------------ the config builder
TINY = ["method.kwargs={}", "model.kwargs={model_channels: 16}", "data.size=16", "data.n=32",
        "diffusion.T=50", "diffusion.zero_terminal_snr=true", "sample.n=2", "sample.steps=5",
        "train.batch_size=4", "train.steps=2", "train.progress=false", "train.device=cpu", "train.log_every=1"]


def cfg(*extra):
    return load_config("shapes-ddpm", [*TINY, *extra])


def perturbed(method, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method


def test_builder_needs_init_and_copies_it_into_both_networks(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        build_method(cfg("method.name=self-perceptual"))
    torch.manual_seed(0)
    mse = perturbed(build_method(cfg("method.name=ddpm")))
    init = state_of(mse)
    method = build_method(cfg("method.name=self-perceptual", "method.kwargs={layer: encoder, t_prime: near}"), init)
    assert isinstance(method, SelfPerceptual) and method.parameterization == "v"
    assert method.layers == ("enc0", "enc1") and method.t_prime == "near"
    assert float(method.process.alphas_cumprod[-1]) == 0.0 and method.process.T == 50
    want = network_weights(init)
    assert set(want) == set(method.net.state_dict())
    for k, v in method.net.state_dict().items():
        assert torch.equal(v, want[k]), k
    frozen = method.perceptual_net.net
    assert frozen is not method.net
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, want[k]), k
    assert frozen.conv_out.weight.data_ptr() != method.net.conv_out.weight.data_ptr()
    # from an exported .safetensors file, through init_from
    path = export_weights(mse, tmp_path / "mse.safetensors", half=False)
    from_file = build_method(cfg("method.name=self-perceptual", f"init_from={path}"))
    for k, v in from_file.perceptual_net.net.state_dict().items():
        assert torch.equal(v, want[k]), k
    assert set(from_file.state_dict()) == set(init)


def test_perceptual_from_sets_the_frozen_network_alone(tmp_path):
    """Table 6: the online network starts from init_from, f* comes from perceptual_from."""
    torch.manual_seed(0)
    start = state_of(perturbed(build_method(cfg("method.name=ddpm")), seed=0))
    other = perturbed(build_method(cfg("method.name=ddpm")), seed=1)
    path = export_weights(other, tmp_path / "sp.safetensors", half=False)
    method = build_method(cfg("method.name=self-perceptual", f"method.kwargs={{perceptual_from: '{path}'}}"), start)
    online, frozen, want_other = method.net.state_dict(), method.perceptual_net.net.state_dict(), state_of(other.net)
    assert all(torch.equal(v, start[f"net.{k}"]) for k, v in online.items())
    assert all(torch.equal(v, want_other[k]) for k, v in frozen.items())
    assert not all(torch.equal(v, start[f"net.{k}"]) for k, v in frozen.items())
    with pytest.raises(FileNotFoundError, match="no weights"):
        build_method(cfg("method.name=self-perceptual", "method.kwargs={perceptual_from: nowhere.safetensors}"), start)


def test_builder_errors():
    with pytest.raises(ValueError, match="net"):
        network_weights({"theta.conv_in.weight": torch.zeros(1), "phi.conv_in.weight": torch.zeros(1)})
    casdm_like = {"theta.conv_in.weight": torch.zeros(1), "phi.conv_in.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="net"):
        build_method(cfg("method.name=self-perceptual"), casdm_like)
    with pytest.raises(ValueError, match="unet"):
        build_method(cfg("method.name=self-perceptual", "model.type=mlp2d", "model.preset=null",
                         "model.kwargs={}"), {"net.w": torch.zeros(1)})
    assert network_weights({"net.a": torch.ones(1), "phi.net.b": torch.ones(1)}).keys() == {"a"}
    with pytest.raises(ValueError, match=r"\['min_snr_gamma'\] are not options of self-perceptual"):
        build_method(cfg("method.name=self-perceptual", "method.kwargs={min_snr_gamma: 5, layer: mid}"),
                     {"net.w": torch.zeros(1)})


def test_eps_on_a_zero_terminal_snr_schedule_is_refused():
    zero_snr = GaussianDiffusion(rescale_zero_terminal_snr(beta_schedule("linear", T)))
    with pytest.raises(ValueError, match="zero SNR"):
        SelfPerceptual(tiny_unet(0), tiny_unet(1), zero_snr, "eps")
    SelfPerceptual(tiny_unet(0), tiny_unet(1), zero_snr, "x0")  # x0 and v need no division there


def test_chained_run_trains_and_resumes_with_the_mse_network_frozen(tmp_path):
    train_run(cfg("method.name=ddpm", f"out_dir={tmp_path / 'mse'}"))
    mse = network_weights(read_weights(resolve_weights(tmp_path / "mse")))  # the EMA weights, as init_from reads them
    sp_args = ["method.name=self-perceptual", f"init_from={tmp_path / 'mse'}", f"out_dir={tmp_path / 'sp'}"]
    trainer = train_run(cfg(*sp_args))
    method = trainer.method
    assert isinstance(method, SelfPerceptual) and trainer.step == 2
    assert {"loss", "sp", "mse"} <= set(trainer.history[-1])
    for k, v in method.perceptual_net.net.state_dict().items():
        assert torch.equal(v, mse[k]), k
    assert trainer.model.perceptual_net is method.perceptual_net  # the EMA copy shares f*
    assert any(not torch.equal(v, mse[k]) for k, v in method.net.state_dict().items())
    saved = load_checkpoint(tmp_path / "sp" / "checkpoint.pt")
    assert all(k.startswith("net.") for k in saved["method"]) and set(saved["method"]) == set(saved["ema"])

    resuming = make_trainer(cfg(*sp_args, "train.steps=4"), resume=True)
    assert resuming.step == 2
    for k, v in resuming.method.net.state_dict().items():  # the online net from the SP checkpoint
        assert torch.equal(v, saved["method"]["net." + k]), k
    for k, v in resuming.method.perceptual_net.net.state_dict().items():  # f* rebuilt from init_from
        assert torch.equal(v, mse[k]), k
    resumed = train_run(cfg(*sp_args, "train.steps=4"), resume=True)
    assert resumed.step == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    for k, v in resumed.method.perceptual_net.net.state_dict().items():
        assert torch.equal(v, mse[k]), k
    assert any(not torch.equal(v, saved["method"]["net." + k]) for k, v in resumed.method.net.state_dict().items())
    # an SP run's weights load into a plain ddpm of the same config
    plain = build_method(cfg("method.name=ddpm"))
    plain.load_state_dict(read_weights(resolve_weights(tmp_path / "sp")))


def test_cli_recipe_chains_the_two_shapes_presets(tmp_path, monkeypatch):
    """``python -m pdlib train --config shapes-sp-mse`` then ``--config shapes-sp``: the second preset reads
    the first one's run folder (``init_from: runs/shapes-sp-mse``, here moved under tmp_path)."""
    from pdlib import cli

    monkeypatch.setenv("PDLIB_PROGRESS", "0")
    small = ["data.n=64", "train.batch_size=8", "train.steps=2", "train.log_every=1", "sample.n=2", "sample.steps=3",
             "model.kwargs={model_channels: 16, norm_groups: 8}", "train.device=cpu"]
    mse, sp = tmp_path / "shapes-sp-mse", tmp_path / "shapes-sp"
    assert load_config("shapes-sp").init_from == "runs/shapes-sp-mse"
    assert cli.main(["train", "--config", "shapes-sp-mse", f"out_dir={mse}", *small]) == 0
    assert cli.main(["train", "--config", "shapes-sp", f"out_dir={sp}", f"init_from={mse}", *small]) == 0
    log = [json.loads(line) for line in (sp / "log.jsonl").read_text().splitlines() if '"step"' in line]
    assert [r["step"] for r in log] == [1, 2] and all({"sp", "mse"} <= set(r) for r in log)
    frozen = build_method(load_config("shapes-sp", [f"out_dir={sp}", f"init_from={mse}", *small])).perceptual_net
    want = network_weights(read_weights(resolve_weights(mse)))
    assert all(torch.equal(v, want[k]) for k, v in frozen.net.state_dict().items())


def test_dropped_labels_reach_both_networks(process):
    """With label dropout, the frozen network sees the same (partly dropped) labels as the online one."""
    method, _ = sp_method(process, num_classes=3, cond_drop_prob=1.0)  # every label dropped
    y = torch.tensor([0, 1, 2, 1])
    dropped = method.loss(images(), generator=torch.Generator().manual_seed(3), y=y)["loss"]
    null = method.loss(images(), generator=torch.Generator().manual_seed(3), y=torch.full_like(y, 3))["loss"]
    kept = SelfPerceptual(method.net, copy.deepcopy(method.perceptual_net.net), process, "v")
    given = kept.loss(images(), generator=torch.Generator().manual_seed(3), y=y)["loss"]
    assert torch.equal(dropped, null) and not torch.equal(dropped, given)


def test_experiment_design_is_fair():
    """sp-shapes: each SP run and its more-MSE twin start from the same MSE run with the same optimiser settings,
    and the twin trains STEP_COST times as many steps; the ablations differ from the main SP run in one option."""
    from pdlib.experiments import definition
    from pdlib.experiments.selfperceptual import ABLATIONS, SEEDS, STEP_COST

    runs = definition("sp-shapes", "book")
    for seed in SEEDS:
        for size in ("short", "long"):
            sp, more = runs[f"sp-{size}-s{seed}"], runs[f"mse-more-{size}-s{seed}"]
            assert sp["init_from"] == more["init_from"] == f"run:mse-{size}-s{seed}"
            assert sp["train"] | {"steps": 0} == more["train"] | {"steps": 0}  # lr, warm-up, EMA, batch, seed
            assert more["train"]["steps"] == round(sp["train"]["steps"] * STEP_COST)
            assert sp["method"]["name"] == "self-perceptual" and more["method"]["name"] == "ddpm"
            assert sp["diffusion"] == more["diffusion"] == runs[f"mse-{size}-s{seed}"]["diffusion"]
    main = runs["sp-long-s0"]
    for name in ABLATIONS:
        changed = {k for k in main if runs[name][k] != main[k]} - {"name"}
        assert changed == {"method"}, (name, changed)
        assert runs[name]["init_from"] == "run:mse-long-s0"
