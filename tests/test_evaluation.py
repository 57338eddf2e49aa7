"""``python -m pdlib eval`` (``pdlib.evaluation.evaluate``): what it resolves before sampling, the samples
it saves, the device and the single Inception pass of FID and IS, the unflipped and cached reference.

A stand-in extractor (per-channel mean and standard deviation, 6-d) that records its inputs counts the
images pushed through the feature network; one test loads a full-size Inception file with untrained
weights (three 299x299 forwards).
"""

import hashlib
import importlib

import numpy as np
import pytest
import torch
from test_data_images import _write_cifar10

from pdlib.config import RunConfig, from_dict
from pdlib.errors import DatasetUnavailableError, WeightsUnavailableError
from pdlib.evaluation import evaluate, reference_statistics, save_samples
from pdlib.metrics.frechet import fid, inception_score, resolve_extractor
from pdlib.metrics.inception import FIDInceptionV3
from pdlib.pipeline import build_data

frechet_module = importlib.import_module("pdlib.metrics.frechet")


class _Method(torch.nn.Module):
    """Draws the same uniform random images on every call of ``sample``; counts the calls."""

    def __init__(self, size=16, device="cpu"):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), device=device))
        self.size, self.calls = size, 0

    def sample(self, n, generator=None, progress=True, **kwargs):
        self.calls += 1
        return torch.rand(n, 3, self.size, self.size, generator=torch.Generator().manual_seed(0)) * 2 - 1


class _StandIn(torch.nn.Module):
    """Per-channel mean and standard deviation (6-d features); keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen = []
        self.eval()

    def forward(self, images):
        self.seen.append(images)
        return self.scale * torch.cat([images.mean((2, 3)), images.std((2, 3))], 1)

    def count(self):
        return sum(len(batch) for batch in self.seen)


def _cfg(tmp_path, metrics, **data):
    return from_dict(RunConfig, {
        "out_dir": str(tmp_path / "run"), "data": {"name": "shapes", "n": 16, "size": 16, **data},
        "train": {"device": "cpu"}, "sample": {"batch_size": 64}, "eval": {"metrics": metrics}})


def _evaluate(cfg, method, net, tmp_path, n=12, name="moments"):
    return evaluate(cfg, method, n_samples=n, progress=False, stats_dir=tmp_path / "stats", extractor=net,
                    extractor_name=name)


def _quantized(images):
    return torch.round((images + 1) * 127.5) / 127.5 - 1


# ------------------------------------------------------------------ resolved before sampling
def test_missing_weights_fail_before_sampling(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    method = _Method()
    for metrics in (["inception_score"], ["fid"], ["validity", "fid", "inception_score"]):
        with pytest.raises(WeightsUnavailableError):
            evaluate(_cfg(tmp_path, metrics), method, n_samples=4, progress=False, stats_dir=tmp_path)
    assert method.calls == 0


def test_missing_data_set_fails_before_sampling(tmp_path):
    method = _Method()
    cfg = _cfg(tmp_path, ["fid"], name="cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetUnavailableError, match="CIFAR-10"):
        _evaluate(cfg, method, _StandIn(), tmp_path)
    assert method.calls == 0


def test_too_few_samples_for_fid_fail_before_sampling(tmp_path):
    method, net = _Method(), _StandIn()
    with pytest.raises(ValueError, match="FID from 6 generated samples of 6-d features"):
        _evaluate(_cfg(tmp_path, ["fid"]), method, net, tmp_path, n=6)
    with pytest.raises(ValueError, match="FID from 5 reference samples"):
        _evaluate(_cfg(tmp_path, ["fid"], n=5), method, net, tmp_path)
    assert method.calls == 0


# ------------------------------------------------------------------ saved samples
def test_samples_are_saved_as_uint8_npz(tmp_path):
    method = _Method(size=8)
    cfg = _cfg(tmp_path, ["validity"])
    results = evaluate(cfg, method, n_samples=5, progress=False)
    assert set(results) == {"n_samples", "sample_seconds", "samples_path", "validity"}
    assert results["samples_path"] == str(tmp_path / "run" / "eval_samples_5.npz")
    with np.load(results["samples_path"], allow_pickle=False) as f:
        saved = f["arr_0"]
    samples = method.sample(5)
    assert saved.dtype == np.uint8 and saved.shape == (5, 8, 8, 3)
    torch.testing.assert_close(torch.from_numpy(saved).permute(0, 3, 1, 2).float() / 127.5 - 1, _quantized(samples))
    elsewhere = evaluate(cfg, method, n_samples=5, progress=False, out_dir=tmp_path / "elsewhere")
    assert elsewhere["samples_path"] == str(tmp_path / "elsewhere" / "eval_samples_5.npz")
    points = torch.randn(7, 2)
    with np.load(save_samples(points, tmp_path / "points.npz"), allow_pickle=False) as f:
        np.testing.assert_array_equal(f["arr_0"], points.numpy())


# ------------------------------------------------------------------ the device
class _Stop(Exception):
    pass


def test_feature_network_is_loaded_on_the_method_device(tmp_path, monkeypatch):
    """The FID Inception goes where the method's parameters are, else to ``train.device``."""
    devices = []

    def loader(weights_path=None, *, device=None, **kwargs):
        devices.append(torch.device(device))
        raise _Stop

    monkeypatch.setattr(frechet_module, "load_fid_inception", loader)
    cfg = _cfg(tmp_path, ["inception_score"])
    with pytest.raises(_Stop):
        evaluate(cfg, _Method(device="meta"), n_samples=4, progress=False)
    cfg.train.device = "meta"
    with pytest.raises(_Stop):
        evaluate(cfg, torch.nn.Identity(), n_samples=4, progress=False)
    assert devices == [torch.device("meta")] * 2


def test_inception_weights_file_reference_on_device_and_cached_by_sha(tmp_path, monkeypatch):
    """A full-size Inception file (untrained weights): loaded onto the method's device, its reference
    statistics cached under the file's SHA-256; then FID from 3 reference images is refused, unsampled."""
    weights = tmp_path / "inception.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    nets = []
    load = frechet_module.load_fid_inception
    monkeypatch.setattr(frechet_module, "load_fid_inception",
                        lambda *args, **kwargs: nets.append(load(*args, **kwargs)) or nets[-1])
    cfg = _cfg(tmp_path, ["fid"], n=3)
    cfg.eval.fid_weights = str(weights)
    method = _Method()
    with pytest.warns(UserWarning, match="not comparable"), \
            pytest.raises(ValueError, match="FID from 3 reference samples of 2048-d features"):
        evaluate(cfg, method, n_samples=4, progress=False, stats_dir=tmp_path / "stats")
    assert method.calls == 0
    assert next(nets[0].parameters()).device == torch.device("cpu")
    [cached] = (tmp_path / "stats").iterdir()
    with np.load(cached, allow_pickle=False) as f:
        assert f"sha256:{hashlib.sha256(weights.read_bytes()).hexdigest()}" in str(f["key"])
        assert f["mu"].shape == (2048,) and int(f["n"]) == 3


# ------------------------------------------------------------------ one pass for FID and IS
def test_fid_and_is_share_one_pass_over_the_samples(tmp_path):
    net, method = _StandIn(), _Method()
    cfg = _cfg(tmp_path, ["fid", "validity", "inception_score"])
    results = _evaluate(cfg, method, net, tmp_path)
    assert list(results)[-3:] == ["fid", "validity", "inception_score"]
    assert net.count() == 16 + 12  # the reference once, the samples once
    samples = method.sample(12)
    torch.testing.assert_close(torch.cat(net.seen)[16:], _quantized(samples))
    reference = build_data(cfg)
    kw = dict(extractor=_StandIn(), extractor_name="moments", progress=False)
    assert results["fid"] == pytest.approx(fid(reference, samples, **kw), rel=1e-9)
    assert results["inception_score"] == pytest.approx(inception_score(samples, **kw), rel=1e-9)


# ------------------------------------------------------------------ the reference set
@pytest.mark.usefixtures("no_md5")
def test_reference_images_are_not_flipped(tmp_path):
    batches = _write_cifar10(tmp_path / "cifar")
    data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    unflipped = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 127.5 - 1
    cfg = _cfg(tmp_path, ["fid"], name="cifar10", root=str(tmp_path / "cifar"), hflip=True)
    torch.manual_seed(0)
    training = torch.stack([image for image, _ in build_data(cfg)])
    assert not torch.equal(training, unflipped)  # training images are flipped at random
    net = _StandIn()
    reference_statistics(cfg, resolve_extractor(net, "moments"), stats_dir=tmp_path, progress=False)
    torch.testing.assert_close(torch.cat(net.seen), unflipped, rtol=0, atol=1e-6)


def test_reference_statistics_are_cached_by_key(tmp_path):
    net, method = _StandIn(), _Method()
    cfg = _cfg(tmp_path, ["fid"])
    first = _evaluate(cfg, method, net, tmp_path)
    assert net.count() == 16 + 12
    net.seen.clear()
    again = _evaluate(cfg, method, net, tmp_path)
    assert net.count() == 12  # the samples only
    assert again["fid"] == pytest.approx(first["fid"], rel=1e-12)
    for changed, name in ((_cfg(tmp_path, ["fid"], seed=1), "moments"), (_cfg(tmp_path, ["fid"], n=17), "moments"),
                          (cfg, "other moments")):
        net.seen.clear()
        _evaluate(changed, method, net, tmp_path, name=name)
        assert net.count() > 12, name
    assert len(list((tmp_path / "stats").glob("shapes-*.npz"))) == 4


def test_reference_cache_notices_a_changed_image_count(tmp_path):
    """An image folder that gains an image has new reference statistics."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = _cfg(tmp_path, ["fid"], name="folder", root=str(folder), size=8)
    extractor = resolve_extractor(_StandIn(), "moments")
    first = reference_statistics(cfg, extractor, stats_dir=tmp_path / "stats", progress=False)
    assert reference_statistics(cfg, extractor, stats_dir=tmp_path / "stats", progress=False).n == first.n == 9
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "9.png")
    assert reference_statistics(cfg, extractor, stats_dir=tmp_path / "stats", progress=False).n == 10
    assert extractor.net.count() == 9 + 10

