"""Image metrics: FID Inception network, Frechet distance, FID/sFID/IS, PRDC and power spectrum.

References: pytorch-fid (network and Frechet distance), the ``prdc`` package, closed forms.
The Inception runs on random weights (no download); each forward costs ~0.3 s on a CPU, so few are made.
"""

import importlib
import math
import pickle

import numpy as np
import prdc
import pytest
import torch
from pytorch_fid import fid_score, inception

from pdlib import WeightsUnavailableError
from pdlib.metrics.frechet import (FeatureStatistics, MetricResult, feature_statistics, fid, frechet_distance,
                               image_statistics, inception_score, sfid)
from pdlib.metrics.inception import FID_WEIGHTS_FILE, FID_WEIGHTS_URL, FIDInceptionV3, load_fid_inception
from pdlib.metrics.prdc import density_coverage, precision_recall
from pdlib.metrics.spectrum import power_spectrum

# The module itself, for monkeypatching.
fid_module = importlib.import_module("pdlib.metrics.frechet")
prdc_module = importlib.import_module("pdlib.metrics.prdc")


# --------------------------------------------------------------------------------------------- helpers

def _random_state_dict(seed=0):
    """A random state dict whose activations stay O(1) through the ~100 layers (He-scaled convolutions,
    batch-norm statistics near the identity)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("conv.weight"):
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2 / value[0].numel())
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith(("bn.bias", "running_mean", "fc.bias")):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key == "fc.weight":
            state[key] = torch.randn(value.shape, generator=g) / math.sqrt(value.shape[1])
        else:
            state[key] = value
    return state


@pytest.fixture(scope="module")
def random_state():
    return _random_state_dict()


@pytest.fixture(scope="module")
def weights_file(random_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random_inception.pth"
    torch.save(random_state, path)
    return path


def _images(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _np_stats(features):
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def _stand_in(images):
    """A cheap named extractor: per-channel mean and standard deviation (6-d)."""
    return torch.cat([images.mean((2, 3)), images.std((2, 3))], 1)


# ----------------------------------------------------------------------------------- the Inception network

def test_fid_inception_matches_pytorch_fid(random_state, monkeypatch):
    """Same state dict -> same pool3, spatial (mixed_6/conv[..., :7]) and unbiased logits as pytorch-fid."""
    # pytorch-fid loads "the weights file" strictly into its network: same names and shapes as ours
    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: random_state)
    ref = inception.InceptionV3([3], resize_input=True, normalize_input=False).eval()

    captured = {}
    mixed_6d = ref.blocks[2][6]  # Mixed_5b, 5c, 5d, 6a, 6b, 6c, 6d: TF's mixed_6
    mixed_6d.branch1x1.register_forward_hook(lambda mod, inp, out: captured.setdefault("conv", out))
    ours = FIDInceptionV3()
    ours.load_state_dict(random_state)
    ours.eval()
    x = _images(1, size=40)
    with torch.no_grad():
        ref_pool3 = ref(x)[0].flatten(1)
        out = ours(x)
    assert ref_pool3.abs().mean() > 0.1  # the random network's features are not vanishing
    torch.testing.assert_close(out["pool3"], ref_pool3, rtol=1e-4, atol=1e-5)
    ref_spatial = captured["conv"][:, :7].permute(0, 2, 3, 1).reshape(1, -1)  # TF's NHWC flattening
    assert out["spatial"].shape == (1, 7 * 17 * 17)
    torch.testing.assert_close(out["spatial"], ref_spatial, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["logits_unbiased"], ref_pool3 @ random_state["fc.weight"].T, rtol=1e-4,
                               atol=1e-4)


def test_missing_weights_raise_without_download(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        fid(_images(3), _images(3, seed=1), allow_small=True)
    assert no_network == []  # told what to download, not downloading
    message = str(err.value)
    expected = tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    assert FID_WEIGHTS_FILE in message and str(expected) in message and FID_WEIGHTS_URL in message
    with pytest.raises(WeightsUnavailableError, match="nowhere.pth"):
        load_fid_inception(tmp_path / "nowhere.pth")


def test_fid_pipeline_with_random_weights(weights_file, monkeypatch):
    """fid() from images loads the weights file, quantises, extracts pool3 and equals frechet_distance of
    the features the network produced; the number is labelled as not comparable."""
    calls = []

    def loader(*args, **kwargs):
        net = load_fid_inception(*args, **kwargs)
        net.register_forward_hook(lambda mod, inp, out: calls.append((inp[0], out)))
        return net

    monkeypatch.setattr(fid_module, "load_fid_inception", loader)
    real, fake = _images(2, seed=1), _images(2, seed=2)
    with pytest.warns(UserWarning, match="not comparable"):
        value = fid(real, fake, weights_path=weights_file, batch_size=1, allow_small=True, progress=False)
    assert len(calls) == 4  # batch_size=1: one call per image
    inputs = torch.cat([c[0] for c in calls])
    torch.testing.assert_close(inputs, torch.round((torch.cat([real, fake]) + 1) / 2 * 255) / 255 * 2 - 1)
    # Two samples per side give rank-1 covariances u u^T and w w^T (u = (x1 - x2) / sqrt 2), for which
    # Tr (S1 S2)^(1/2) = |u . w|: a closed form that avoids a second 2048-d eigendecomposition.
    f = torch.cat([c[1]["pool3"] for c in calls]).double()
    u, w = (f[0] - f[1]) / math.sqrt(2), (f[2] - f[3]) / math.sqrt(2)
    mean_gap = (f[:2].mean(0) - f[2:].mean(0)).square().sum()
    expected = float(mean_gap + u @ u + w @ w - 2 * (u @ w).abs())
    assert value == pytest.approx(expected, rel=1e-6)
    assert isinstance(value, MetricResult) and value.metric == "FID"
    assert value.comparable_to_published is False and "NOT comparable" in repr(value)


# ----------------------------------------------------------------------------------- Frechet distance

def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    d = 6
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    a, b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64)
    b[0] = 0.0  # a singular covariance is allowed
    # identical Gaussians
    sigma = torch.randn(d, d, generator=g, dtype=torch.float64)
    sigma = sigma @ sigma.T
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    closed = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(closed, rel=1e-12)
    # commuting covariances share eigenvectors: the same closed form in a rotated basis
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    rotated = frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert rotated == pytest.approx(closed, rel=1e-9)


def test_frechet_distance_matches_pytorch_fid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 32)) @ rng.normal(size=(32, 32))
    y = rng.normal(size=(150, 32)) @ rng.normal(size=(32, 32)) + 0.3
    s1, s2 = _np_stats(x), _np_stats(y)
    ours = frechet_distance(*s1, *s2)
    assert ours == pytest.approx(fid_score.calculate_frechet_distance(*s1, *s2), rel=1e-6)
    assert frechet_distance(*s2, *s1) == pytest.approx(ours, rel=1e-10)  # symmetric
    assert ours > 0


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))


# ----------------------------------------------------------------------------------- FID with a stand-in

def test_stand_in_extractor_is_labelled_and_exact():
    real, fake = _images(20, size=8, seed=3), _images(24, size=8, seed=4) * 0.5
    value = fid(real, fake, extractor=_stand_in, extractor_name="channel moments", quantize=False,
                progress=False)
    expected = frechet_distance(*_np_stats(_stand_in(real)), *_np_stats(_stand_in(fake)))
    assert value == pytest.approx(expected, rel=1e-9)
    assert value.extractor == "stand-in 'channel moments'" and not value.comparable_to_published
    assert "NOT comparable with published FID" in repr(value) and "channel moments" in str(value)
    restored = pickle.loads(pickle.dumps(value))
    assert restored == value and restored.extractor == value.extractor and restored.metric == "FID"
    # a DataLoader-style iterable of (images, labels) batches gives the same number
    batches = [(real[i:i + 7], torch.zeros(len(real[i:i + 7]))) for i in range(0, 20, 7)]
    same = fid(batches, fake, extractor=_stand_in, extractor_name="channel moments", quantize=False,
               progress=False)
    assert same == pytest.approx(value, rel=1e-9)
    with pytest.raises(ValueError, match="extractor_name"):
        fid(real, fake, extractor=_stand_in)
    with pytest.raises(ValueError, match="training mode"):
        fid(real, fake, extractor=FIDInceptionV3())  # batch norm would use batch statistics


def test_statistics_sample_count_and_extractor_checks():
    real, fake = _images(5, size=8), _images(5, size=8, seed=1)
    with pytest.raises(ValueError, match="allow_small"):
        fid(real, fake, extractor=_stand_in, extractor_name="moments", progress=False)
    stats = image_statistics(real, extractor=_stand_in, extractor_name="moments", progress=False)["pool3"]
    assert isinstance(stats, FeatureStatistics) and stats.n == 5 and stats.sigma.shape == (6, 6)
    assert stats.feature == "pool3" and stats.extractor == "stand-in 'moments'"
    quantized = torch.round((real + 1) * 127.5) / 127.5 - 1
    mu, sigma = _np_stats(_stand_in(quantized))
    torch.testing.assert_close(stats.mu, torch.from_numpy(mu))
    torch.testing.assert_close(stats.sigma, torch.from_numpy(sigma))
    with pytest.raises(ValueError, match="different extractors"):
        fid(stats, fake, extractor=_stand_in, extractor_name="other", allow_small=True, progress=False)
    other = feature_statistics(torch.randn(10, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="different extractors"):
        fid(stats, other, allow_small=True)
    with pytest.raises(ValueError, match="'spatial' statistics"):
        sfid(stats, stats, allow_small=True)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fid(real * 3, fake, extractor=_stand_in, extractor_name="moments", allow_small=True, progress=False)


def test_sfid_and_is_select_their_features():
    """sfid reads the "spatial" output and inception_score the "logits_unbiased" output."""
    g = torch.Generator().manual_seed(5)
    proj = torch.randn(3, 4, generator=g)

    def extractor(images):
        m = images.mean((2, 3))
        return {"pool3": m, "spatial": m @ proj, "logits_unbiased": 3 * m @ proj}

    real, fake = _images(12, size=8, seed=6), _images(12, size=8, seed=7)
    kw = dict(extractor=extractor, extractor_name="toy", quantize=False, progress=False)
    expected = frechet_distance(*_np_stats(real.mean((2, 3)) @ proj), *_np_stats(fake.mean((2, 3)) @ proj))
    assert sfid(real, fake, **kw) == pytest.approx(expected, rel=1e-9)
    score = inception_score(fake, splits=2, **kw)
    assert score == pytest.approx(inception_score(3 * fake.mean((2, 3)) @ proj, splits=2), rel=1e-12)
    assert score.metric == "IS" and not score.comparable_to_published


# ----------------------------------------------------------------------------------- Inception Score

def _is_by_hand(logits, splits):
    """The loop of Salimans et al.'s inception_score.py."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, scores = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score_closed_forms_and_hand_computation():
    assert inception_score(torch.zeros(30, 7), splits=3) == pytest.approx(1.0, abs=1e-12)
    k = 5
    confident = 100.0 * torch.eye(k).repeat(4, 1)  # each class 4 times, near one-hot
    assert inception_score(confident, splits=1) == pytest.approx(k, rel=1e-6)
    logits = torch.randn(23, 11, generator=torch.Generator().manual_seed(0))  # uneven splits
    score = inception_score(logits, splits=4)
    mean, std = _is_by_hand(logits, 4)
    assert score == pytest.approx(mean, rel=1e-12) and score.std == pytest.approx(std, rel=1e-9)
    assert "NOT comparable" in repr(score)
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits[:3], splits=4)


# ----------------------------------------------------------------------------------- PRDC

@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_reference_package(k, monkeypatch):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(300, 16)).astype(np.float32)
    fake = (rng.normal(size=(250, 16)) * 1.2 + 0.3).astype(np.float32)
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    pr = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k)
    dc = density_coverage(torch.from_numpy(real), torch.from_numpy(fake), k=k)
    assert 0 < ref["precision"] < 1 and 0 < ref["recall"] < 1 and 0 < ref["coverage"] < 1
    for ours, name in ((pr.precision, "precision"), (pr.recall, "recall"), (dc.density, "density"),
                       (dc.coverage, "coverage")):
        assert ours == pytest.approx(float(ref[name]), abs=1e-6), name
    # tiny blocks: the chunked computation gives the same numbers
    monkeypatch.setattr(prdc_module, "_BLOCK_ELEMENTS", 1000)
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k) == pr
    assert density_coverage(torch.from_numpy(real), torch.from_numpy(fake), k=k) == dc


def test_prdc_argument_checks():
    with pytest.raises(ValueError, match="same dimension"):
        precision_recall(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="more than k=5"):
        density_coverage(torch.randn(5, 3), torch.randn(10, 3), k=5)


# ----------------------------------------------------------------------------------- power spectrum

def test_constant_image_has_power_only_at_zero():
    freqs, power = power_spectrum(torch.full((2, 3, 16, 16), 0.5))
    assert freqs[0] == 0 and power[0] == pytest.approx(0.25 * 16 * 16)
    assert power[1:].abs().max() < 1e-20


def test_sinusoid_peaks_at_its_frequency():
    n = 32
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    along_x = torch.cos(2 * math.pi * 5 * x / n)
    diagonal = torch.cos(2 * math.pi * (3 * y + 4 * x) / n)  # radius sqrt(3^2 + 4^2) = 5 cycles per image
    for image in (along_x, diagonal):
        freqs, power = power_spectrum(image.expand(1, 1, n, n).float())
        assert freqs[power.argmax()] == pytest.approx(5 / n)
        assert torch.allclose(freqs[:3], torch.tensor([0, 1 / n, 2 / n], dtype=torch.float64))


def test_white_noise_spectrum_is_flat():
    g = torch.Generator().manual_seed(0)
    freqs, power = power_spectrum(0.5 * torch.randn(1024, 3, 16, 16, generator=g))
    assert torch.allclose(power, torch.full_like(power, 0.25), rtol=0.15)


def test_parseval_total_power():
    n = 16
    images = torch.randn(3, 2, n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    freqs, power = power_spectrum(images)
    counts = np.zeros(len(freqs))
    for ky in range(n):
        for kx in range(n):
            radius = math.hypot(min(ky, n - ky), min(kx, n - kx))  # in cycles per image
            counts[round(radius)] += 1
    assert counts.sum() == n * n and (counts > 0).all()
    total = float((torch.from_numpy(counts) * power).sum())
    assert total == pytest.approx(float(images.square().sum((2, 3)).mean()), rel=1e-10)
