"""Frechet Inception Distance, spatial FID and Inception Score.

- FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", eq. 6): fit a Gaussian to
  the Inception pool3 features of real and of generated images and report the Frechet distance
  between the two Gaussians (Dowson & Landau 1982).
- sFID (Nash et al. 2021, "Generating images with sparse representations", section 5): the same distance
  on spatial features (``mixed_6/conv``, see :mod:`pdlib.metrics.inception`), which are more sensitive
  to spatial structure.
- IS (Salimans et al. 2016, "Improved techniques for training GANs", section 4):
  ``exp(E_x KL(p(y|x) || p(y)))`` from Inception's class probabilities.

:func:`fid_and_inception_score` computes FID and IS from one Inception pass over the generated images.

Book chapter "Evaluating generative models". Every number these functions return is a
:class:`MetricResult`, a ``float`` that also records which feature network produced it and whether it is
comparable with published numbers: only pytorch-fid's TF-Inception weights are. A stand-in extractor
(any callable, named with ``extractor_name``) is allowed for offline work, and its numbers say so.

Sample counts are the caller's: nothing here draws 50,000 samples behind your back. FID is biased at
small sample sizes (Chong & Forsyth 2020), so only compare numbers computed from the same number of
samples; with no more samples than feature dimensions the covariance is singular and ``fid``/``sfid``
refuse unless ``allow_small=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .. import _validate
from ..progress import progress_bar
from .inception import FIDInceptionV3, check_images, load_fid_inception


class MetricResult(float):
    """A metric value (a ``float``) labelled with the feature network that produced it.

    Attributes: ``metric`` ("FID", "sFID", "IS"), ``extractor`` (a description of the network),
    ``comparable_to_published`` (True only for pytorch-fid's TF-Inception weights) and ``std`` (the
    standard deviation over splits for IS, else None). ``repr``/``str`` print the label.
    """

    def __new__(cls, value, *, metric: str = "", extractor: str = "unknown",
                comparable_to_published: bool = False, std: float | None = None):
        obj = super().__new__(cls, value)
        obj.metric, obj.extractor = metric, extractor
        obj.comparable_to_published, obj.std = bool(comparable_to_published), std
        return obj

    def __repr__(self):
        value = float.__repr__(self) + (f" ± {self.std:.4g}" if self.std is not None else "")
        if self.comparable_to_published:
            return f"{self.metric} {value} ({self.extractor}; comparable with published {self.metric})"
        return (f"{self.metric} {value} (extractor: {self.extractor}; "
                f"NOT comparable with published {self.metric} numbers)")

    __str__ = __repr__


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean ``mu`` [D] and covariance ``sigma`` [D, D] (float64, unbiased, as ``numpy.cov``) of ``n``
    feature vectors, labelled with the extractor that produced them and which of its outputs
    (``feature``: "pool3", "spatial", or None when unknown). Compute these once for a reference data set
    and pass them to :func:`fid` / :func:`sfid` in place of images."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int
    extractor: str = "features given by the caller"
    comparable_to_published: bool = False
    feature: str | None = None


class _Moments:
    """Streaming mean and covariance in float64. Sums are taken around the first batch's mean, which
    keeps ``sum(x x^T) - n mu mu^T`` free of cancellation when the features have a large mean."""

    def __init__(self):
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().to("cpu" if x.device.type == "mps" else x.device, torch.float64)
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1, self.s2 = torch.zeros_like(self.shift), x.new_zeros(x.shape[1], x.shape[1])
        x = x - self.shift
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += x.T @ x

    def statistics(self, extractor: str, comparable: bool, feature: str | None) -> FeatureStatistics:
        if self.n < 2:
            raise ValueError(f"feature statistics need at least 2 samples, got {self.n}")
        mean = self.s1 / self.n
        sigma = (self.s2 - self.n * torch.outer(mean, mean)) / (self.n - 1)
        return FeatureStatistics((self.shift + mean).cpu(), sigma.cpu(), self.n, extractor, comparable, feature)


def feature_statistics(features: torch.Tensor, *, extractor: str = "features given by the caller",
                       comparable_to_published: bool = False) -> FeatureStatistics:
    """Mean and covariance of ``features`` [N, D] (N >= 2), labelled with ``extractor``."""
    _validate.tensor("features", features, ndim=2)
    moments = _Moments()
    moments.add(features)
    return moments.statistics(extractor, comparable_to_published, None)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)
    (Dowson & Landau 1982; Heusel et al. 2017, eq. 6):

        ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    Computed in float64. ``sigma1 sigma2`` is similar to the symmetric PSD matrix
    ``A = sigma1^(1/2) sigma2 sigma1^(1/2)``, so ``Tr (sigma1 sigma2)^(1/2)`` is the sum of the square
    roots of A's eigenvalues. With ``sigma1 = F F^T`` from its eigendecomposition, A has the nonzero
    eigenvalues of ``F^T sigma2 F``. Two symmetric eigendecompositions thus replace a general matrix
    square root: no imaginary parts or diagonal offsets are needed even when the covariances are
    singular (and a rank-r ``sigma1`` needs only an r x r second one). Accepts tensors or numpy arrays;
    the result is clipped at 0 (it can otherwise be -1e-12 from rounding).
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).cpu() for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64).cpu() for s in (sigma1, sigma2))
    _validate.tensor("mu1", mu1, ndim=1)
    d = mu1.shape[0]
    for name, value, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)),
                               ("sigma2", sigma2, (d, d))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1, got {tuple(value.shape)}")
        if not bool(value.isfinite().all()):
            raise ValueError(f"{name} has non-finite entries")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    evals, evecs = torch.linalg.eigh(sigma1)
    roots = _psd_sqrt("sigma1", evals)
    factor = (evecs * roots)[:, roots > 0]  # sigma1 = F F^T with F of rank(sigma1) columns
    inner = factor.T @ sigma2 @ factor  # same nonzero eigenvalues as A, but only rank x rank
    # inner is PSD when sigma2 is, so a clearly negative eigenvalue means sigma2 is not.
    tr_root = _psd_sqrt("sigma2", torch.linalg.eigvalsh((inner + inner.T) / 2)).sum()
    dist = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_root
    return max(float(dist), 0.0)


def _psd_sqrt(name: str, evals: torch.Tensor) -> torch.Tensor:
    """Square roots of a PSD matrix's eigenvalues. Eigenvalues below the rounding level
    ``D * eps * max|lambda|`` (numpy's matrix_rank tolerance) count as 0, so that a singular covariance
    contributes no sqrt(rounding noise) terms; clearly negative ones raise ``ValueError``."""
    if not evals.numel():
        return evals
    tol = float(evals.abs().max()) * len(evals) * torch.finfo(evals.dtype).eps
    if evals.min() < -max(1e4 * tol, 1e-300):
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {evals.min():.3g})")
    return torch.where(evals > tol, evals, 0.0).sqrt()


# ------------------------------------------------------------------------------------------------
# Feature extraction


class Extractor(NamedTuple):
    """A feature network ready to use: the callable ``net``, the ``name`` that labels its numbers and
    whether they are ``comparable_to_published``. Made by :func:`resolve_extractor`; every function here
    accepts one as ``extractor`` (then without ``extractor_name`` and ``weights_path``)."""

    net: Callable
    name: str
    comparable_to_published: bool


def resolve_extractor(extractor=None, extractor_name: str | None = None, weights_path=None,
                      device=None) -> Extractor:
    """The :class:`Extractor` that ``extractor`` and ``extractor_name`` describe (see
    :func:`image_statistics`). With ``extractor=None`` the FID Inception is loaded from ``weights_path`` (or
    the torch hub cache) onto ``device``, raising ``WeightsUnavailableError`` at once when the file is
    missing: resolve it before expensive work so that a missing file fails early."""
    if isinstance(extractor, Extractor):
        if extractor_name is not None or weights_path is not None:
            raise ValueError("an Extractor is already resolved; pass neither extractor_name nor weights_path")
        return extractor
    if extractor is None:
        if extractor_name is not None:
            raise ValueError("extractor_name names a stand-in extractor; pass the extractor too")
        extractor = load_fid_inception(weights_path, device=device)
    elif weights_path is not None:
        raise ValueError("weights_path is for the FID Inception that fid() loads; do not pass it with extractor")
    if isinstance(extractor, nn.Module) and extractor.training:
        raise ValueError("the extractor module is in training mode; call .eval() so that its features do "
                         "not depend on the batch")
    if isinstance(extractor, FIDInceptionV3):
        if extractor_name is not None:
            raise ValueError("extractor_name is for stand-in extractors; an FIDInceptionV3 is labelled by "
                             "its weights")
        return Extractor(extractor, extractor.name, extractor.comparable_to_published)
    if not callable(extractor):
        raise TypeError(f"extractor must be an FIDInceptionV3 or a callable, got {type(extractor).__name__}")
    if not isinstance(extractor_name, str) or not extractor_name.strip():
        raise ValueError("a stand-in extractor needs extractor_name='...': numbers computed with it are "
                         "labelled with that name as not comparable with published ones")
    return Extractor(extractor, f"stand-in '{extractor_name}'", False)


def _input_device(extractor, device):
    if isinstance(extractor, nn.Module):
        param = next(extractor.parameters(), None)
        if param is not None:
            return param.device
    return device


def _batches(images, batch_size: int):
    """Yield image batches from a tensor [N, C, H, W] or an iterable of batches (tensors, or tuples and
    lists such as a DataLoader's ``(images, labels)`` whose first item is the image tensor)."""
    if isinstance(images, torch.Tensor):
        _validate.tensor("images", images, ndim=4)
        yield from images.split(batch_size)
        return
    if isinstance(images, (FeatureStatistics, str, bytes)) or not isinstance(images, Iterable):
        raise TypeError("images must be a tensor [N, C, H, W] or an iterable of such batches, "
                        f"got {type(images).__name__}")
    for item in images:
        batch = item[0] if isinstance(item, (tuple, list)) and item else item
        yield _validate.tensor("image batch", batch, ndim=4)


def _quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels of an 8-bit PNG, as published evaluations see them."""
    return torch.round((images + 1) * 127.5) / 127.5 - 1


def _extract(images, net, keys, *, batch_size, device, quantize, progress):
    """Run ``net`` over ``images`` and yield ``{key: features [B, D]}`` per batch (no gradients)."""
    _validate.positive_int("batch_size", batch_size)
    total = math.ceil(len(images) / batch_size) if isinstance(images, torch.Tensor) else None
    target = _input_device(net, device)
    for batch in progress_bar(_batches(images, batch_size), total=total, desc="features", enabled=progress):
        check_images(batch)
        batch = batch.to(target) if target is not None else batch
        with torch.no_grad():
            out = net(_quantize(batch) if quantize else batch)
        if isinstance(out, torch.Tensor):
            out = {key: out for key in keys}
        missing = [key for key in keys if key not in out]
        if missing:
            raise ValueError(f"the extractor's output has no {missing}; it must return a tensor [B, D] or a "
                             f"dict with these keys")
        for key in keys:
            if out[key].ndim != 2 or out[key].shape[0] != batch.shape[0]:
                raise ValueError(f"extractor output {key!r} must have shape [B, D] with B = {batch.shape[0]}, "
                                 f"got {tuple(out[key].shape)}")
        yield {key: out[key] for key in keys}


def image_statistics(images, *, features=("pool3",), extractor=None, extractor_name: str | None = None,
                     batch_size: int = 50, weights_path=None, device=None, quantize: bool = True,
                     progress: bool = True) -> dict[str, FeatureStatistics]:
    """Feature statistics of ``images`` for each key in ``features`` ("pool3" for FID, "spatial" for
    sFID), in one pass over the images.

    ``images``: a tensor [N, C, H, W] in [-1, 1] or an iterable of such batches (e.g. a DataLoader).
    ``extractor``: None loads the FID Inception (:func:`pdlib.metrics.inception.load_fid_inception`, from
    ``weights_path`` or the torch hub cache, on ``device``; missing weights raise
    ``pdlib.WeightsUnavailableError``); an :class:`FIDInceptionV3` you loaded; or any callable mapping an
    image batch to a tensor [B, D] (or a dict with the requested keys), named by ``extractor_name``; or an
    :class:`Extractor` from :func:`resolve_extractor`.
    Stand-in modules receive their input on the device of their parameters. ``quantize`` rounds images to
    8-bit levels first, as the saved PNGs of published evaluations are.
    """
    if isinstance(features, str):
        features = (features,)
    resolved = resolve_extractor(extractor, extractor_name, weights_path, device)
    return _statistics(images, resolved, tuple(features), batch_size=batch_size, device=device,
                       quantize=quantize, progress=progress)


def _statistics(images, resolved, features, **extract_kw) -> dict[str, FeatureStatistics]:
    net, name, comparable = resolved
    moments = {key: _Moments() for key in features}
    for out in _extract(images, net, features, **extract_kw):
        for key, value in out.items():
            moments[key].add(value)
    return {key: m.statistics(name, comparable, key) for key, m in moments.items()}


def _frechet_metric(metric, feature, real, fake, *, extractor, extractor_name, batch_size, weights_path,
                    device, allow_small, quantize, progress) -> MetricResult:
    sides = [real, fake]
    if not all(isinstance(s, FeatureStatistics) for s in sides):
        resolved = resolve_extractor(extractor, extractor_name, weights_path, device)
        sides = [s if isinstance(s, FeatureStatistics) else
                 _statistics(s, resolved, (feature,), batch_size=batch_size, device=device, quantize=quantize,
                             progress=progress)[feature]
                 for s in sides]
    real, fake = sides
    if real.extractor != fake.extractor:
        raise ValueError(f"real and fake features come from different extractors ({real.extractor!r} and "
                         f"{fake.extractor!r}); their {metric} would mean nothing")
    for side, stats in (("real", real), ("fake", fake)):
        if stats.feature not in (None, feature):
            raise ValueError(f"{metric} needs {feature!r} statistics; the {side} ones are {stats.feature!r}")
        if not allow_small:
            check_sample_count(metric, side, stats.n, stats.mu.shape[0])
    value = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    return MetricResult(value, metric=metric, extractor=real.extractor,
                        comparable_to_published=real.comparable_to_published and fake.comparable_to_published)


def check_sample_count(metric: str, side: str, n: int, dim: int) -> None:
    """Raise ``ValueError`` unless ``n`` samples of ``dim``-d features give a full-rank covariance
    (``n > dim``). Callers that draw the samples can check this before drawing them."""
    if n <= dim:
        raise ValueError(
            f"{metric} from {n} {side} samples of {dim}-d features: the covariance needs more samples "
            f"than dimensions to be full rank, and {metric} is strongly biased at small sample sizes "
            f"(published numbers use 50,000 samples). Pass more samples, or allow_small=True for a "
            f"smoke test whose value is not comparable with anything")


def fid(real, fake, *, extractor=None, extractor_name: str | None = None, batch_size: int = 50,
        weights_path=None, device=None, allow_small: bool = False, quantize: bool = True,
        progress: bool = True) -> MetricResult:
    """Frechet Inception Distance (Heusel et al. 2017, eq. 6) between ``real`` and ``fake``.

    Each of ``real`` and ``fake`` is images (a tensor [N, C, H, W] in [-1, 1] or an iterable of batches) or
    a :class:`FeatureStatistics` from :func:`image_statistics`. Both sides must come from the same
    extractor (see :func:`image_statistics` for ``extractor``, ``extractor_name``, ``weights_path``,
    ``device``, ``quantize``). Raises ``ValueError`` when a side has no more samples than the 2048 feature
    dimensions, unless ``allow_small=True``. Returns a labelled :class:`MetricResult`.
    """
    return _frechet_metric("FID", "pool3", real, fake, extractor=extractor, extractor_name=extractor_name,
                           batch_size=batch_size, weights_path=weights_path, device=device,
                           allow_small=allow_small, quantize=quantize, progress=progress)


def sfid(real, fake, *, extractor=None, extractor_name: str | None = None, batch_size: int = 50,
         weights_path=None, device=None, allow_small: bool = False, quantize: bool = True,
         progress: bool = True) -> MetricResult:
    """Spatial FID (Nash et al. 2021, section 5): the Frechet distance on the 2023-d ``"spatial"``
    Inception features (first 7 channels of ``mixed_6/conv``, as guided-diffusion's evaluator computes
    them). Arguments as for :func:`fid`; statistics passed in must be ``"spatial"`` statistics.
    """
    return _frechet_metric("sFID", "spatial", real, fake, extractor=extractor, extractor_name=extractor_name,
                           batch_size=batch_size, weights_path=weights_path, device=device,
                           allow_small=allow_small, quantize=quantize, progress=progress)


def inception_score(images_or_logits, splits: int = 10, *, extractor=None, extractor_name: str | None = None,
                    batch_size: int = 50, weights_path=None, device=None, quantize: bool = True,
                    progress: bool = True) -> MetricResult:
    """Inception Score (Salimans et al. 2016, section 4): ``exp(E_x KL(p(y|x) || p(y)))``.

    ``images_or_logits`` is either class logits [N, K] (a 2-D tensor) or images (a tensor [N, C, H, W] or
    an iterable of batches), from which the FID Inception (or a named stand-in returning logits) computes
    the 1008 unbiased logits, as in the original code. The N samples are cut into ``splits`` consecutive
    parts (boundaries ``i * N // splits``); ``p(y)`` is the mean of ``p(y|x)`` within each part. Returns
    the mean score over the parts, with their (population) standard deviation as ``.std``.
    Logits given directly are labelled as not comparable, since their source is unknown.
    """
    _validate.positive_int("splits", splits)
    if isinstance(images_or_logits, torch.Tensor) and images_or_logits.ndim == 2:
        return _inception_score(images_or_logits.detach(), splits, "logits given by the caller", False)
    net, name, comparable = resolve_extractor(extractor, extractor_name, weights_path, device)
    logits = torch.cat([out["logits_unbiased"].cpu() for out in _extract(
        images_or_logits, net, ("logits_unbiased",), batch_size=batch_size, device=device,
        quantize=quantize, progress=progress)])
    return _inception_score(logits, splits, name, comparable)


def _inception_score(logits: torch.Tensor, splits: int, name: str, comparable: bool) -> MetricResult:
    """The Inception Score of class ``logits`` [N, K] over ``splits`` parts, labelled with ``name``."""
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"inception_score needs at least splits={splits} samples, got {n}")
    log_p = torch.log_softmax(logits.to("cpu", torch.float64), dim=1)
    bounds = [i * n // splits for i in range(1, splits)]
    scores = []
    for part in torch.tensor_split(log_p, bounds):
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(1)
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return MetricResult(float(scores.mean()), metric="IS", extractor=name, comparable_to_published=comparable,
                        std=float(scores.std(correction=0)))


def fid_and_inception_score(real, fake, *, splits: int = 10, extractor=None, extractor_name: str | None = None,
                            batch_size: int = 50, weights_path=None, device=None, allow_small: bool = False,
                            quantize: bool = True, progress: bool = True) -> tuple[MetricResult, MetricResult]:
    """``(fid(real, fake), inception_score(fake))`` from a single pass of the extractor over ``fake``:
    each batch's ``"pool3"`` and ``"logits_unbiased"`` outputs come from the same forward call.

    ``real`` is images or ``"pool3"`` :class:`FeatureStatistics`; the other arguments are those of
    :func:`fid` and :func:`inception_score`.
    """
    _validate.positive_int("splits", splits)
    resolved = resolve_extractor(extractor, extractor_name, weights_path, device)
    kw = dict(batch_size=batch_size, device=device, quantize=quantize, progress=progress)
    moments, logits = _Moments(), []
    for out in _extract(fake, resolved.net, ("pool3", "logits_unbiased"), **kw):
        moments.add(out["pool3"])
        logits.append(out["logits_unbiased"].cpu())
    fake_stats = moments.statistics(resolved.name, resolved.comparable_to_published, "pool3")
    distance = _frechet_metric("FID", "pool3", real, fake_stats, extractor=resolved, extractor_name=None,
                               weights_path=None, allow_small=allow_small, **kw)
    return distance, _inception_score(torch.cat(logits), splits, resolved.name, resolved.comparable_to_published)
