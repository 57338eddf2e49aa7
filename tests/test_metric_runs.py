"""Configs of the metric-function methods (``pdlib.metric_runs``) and the disc-attribute distance
(``pdlib.metrics.shapes``)."""

import math

import pytest
import torch

from pdlib.config import load_config
from pdlib.data.shapes import RADIUS_RANGE, shapes, shapes_validity
from pdlib.methods import DDPM, CasDM, DualDiffusion
from pdlib.metric_runs import metric_from
from pdlib.metrics.shapes import disc_attribute_distance, disc_attributes
from pdlib.nets import FixResCNN, UNet
from pdlib.perceptual import LPIPS
from pdlib.pipeline import METHODS, build_method
from pdlib.train import Frozen


def _cfg(*fields):
    return load_config("shapes-ddpm", ["method.kwargs={}", "diffusion.schedule=cosine",
                                       "diffusion.parameterization=eps", *fields])


def test_metric_specs():
    assert metric_from(None) is None
    m = metric_from("lpips-vgg")
    assert isinstance(m, Frozen) and isinstance(m.net, LPIPS) and m.net.resize is None
    m = metric_from({"name": "lpips-vgg", "resize": 224, "avgpool": True})
    assert m.net.resize == 224 and "average pooling" in m.net.label
    with pytest.raises(ValueError, match="lpips-vgg"):
        metric_from("l2")
    with pytest.raises(ValueError, match="needs a name"):
        metric_from({"resize": 224})


def test_dual_builder_gives_the_net_2c_plus_1_outputs():
    method = build_method(_cfg("method.name=dual"))
    assert isinstance(method, DualDiffusion) and method.net.out_channels == 7 and method.metric is None
    gray = build_method(_cfg("method.name=dual", "model.kwargs={in_channels: 1}"))
    assert gray.net.out_channels == 3


def test_casdm_builder_phi_defaults_to_thetas_unet_and_takes_fixres():
    method = build_method(_cfg("method.name=casdm"))
    assert isinstance(method, CasDM) and isinstance(method.phi, UNet)
    assert method.theta.out_channels == 3 and method.phi.out_channels == 4
    assert method.phi.model_channels == method.theta.model_channels
    fixres = build_method(_cfg("method.name=casdm", "method.kwargs={phi: {type: fixres, preset: cpu}, "
                                                    "lambda_mu: 0.5}"))
    assert isinstance(fixres.phi, FixResCNN) and fixres.phi.out_channels == 4 and fixres.lambda_mu == 0.5
    with pytest.raises(ValueError, match="unet"):
        build_method(_cfg("method.name=casdm", "method.kwargs={phi: {type: mlp}}"))
    for name in ("casdm", "dual"):
        with pytest.raises(ValueError, match="predicts eps"):
            build_method(_cfg(f"method.name={name}", "diffusion.parameterization=x0"))


def test_metric_is_frozen_and_not_saved():
    plain = build_method(_cfg("diffusion.parameterization=x0"))
    with_metric = build_method(_cfg("diffusion.parameterization=x0",
                                    "method.kwargs={metric: lpips-vgg, metric_weight: 0.1}"))
    assert isinstance(with_metric, DDPM) and isinstance(with_metric.metric, Frozen)
    assert with_metric.state_dict().keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in with_metric.parameters()) == sum(p.numel() for p in plain.parameters())
    casdm = build_method(_cfg("method.name=casdm", "method.kwargs={metric: lpips-vgg}"))
    assert not any(k.startswith("metric") for k in casdm.state_dict())


def test_ddpm_without_metric_is_the_pipeline_builder():
    assert METHODS["ddpm"].__module__ == "pdlib.metric_runs"
    cfg = _cfg("method.kwargs={min_snr_gamma: 5}", "diffusion.parameterization=v")
    torch.manual_seed(0)
    a = build_method(cfg)
    torch.manual_seed(0)
    b = DDPM(UNet.from_preset("cpu-small"), a.process, parameterization="v", min_snr_gamma=5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_disc_attributes_recover_the_drawn_parameters():
    n, size = 200, 16
    images = shapes(n, size, generator=torch.Generator().manual_seed(3))
    u = torch.rand(n, 7, generator=torch.Generator().manual_seed(3))  # the draws inside shapes()
    lo, hi = RADIUS_RANGE
    r = size * (lo + (hi - lo) * u[:, 0])
    low = r + 1
    cy, cx = low + (size - 2 * low) * u[:, 1], low + (size - 2 * low) * u[:, 2]
    a = disc_attributes(images)
    assert a.shape == (n, 6)
    assert (a[:, 0] - r).abs().max() < 0.5  # sqrt(area / pi) of a digital disc
    assert (a[:, 1] - cy).abs().max() < 0.35 and (a[:, 2] - cx).abs().max() < 0.35
    assert torch.allclose(a[:, 3:], images.amax((2, 3)), atol=1e-6)  # solid colour (all channels > -1)
    assert disc_attributes(torch.full((1, 3, 16, 16), -1.0)).isnan().all()
    with pytest.raises(ValueError, match="RGB"):
        disc_attributes(images[:, :1])


def test_disc_attribute_distance_sees_a_biased_model():
    data = shapes(600, 16, generator=torch.Generator().manual_seed(5))
    fair = disc_attribute_distance(data[:300])
    assert fair["n_valid"] == 300 and fair["frechet"] < 3 * fair["floor"] + 0.05
    small = data[disc_attributes(data)[:, 0] < 4.2][:300]  # only the smaller discs
    biased = disc_attribute_distance(small)
    assert biased["frechet"] > 5 * fair["frechet"]
    noise = torch.rand(8, 3, 16, 16) * 2 - 1
    assert not shapes_validity(noise).any()
    assert disc_attribute_distance(noise) == {"frechet": None, "n_valid": 0, "floor": None}
    assert math.isfinite(fair["floor"])
