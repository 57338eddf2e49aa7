"""Evaluate a trained method as a run config asks: sample, save the samples, compute ``eval.metrics``.

Everything the metrics need from outside is resolved *before* sampling: the FID Inception weights and
the reference data set (a missing file raises ``WeightsUnavailableError`` / ``DatasetUnavailableError``
in seconds, not after hours of sampling), and FID's reference statistics, which are cached on disk
(:func:`reference_statistics`). FID and IS share one Inception pass over the samples, on the device the
method sampled on. The samples are saved as an ``.npz`` beside the run (:func:`save_samples`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import _validate
from .config import RunConfig
from .data import shapes_validity, toy2d
from .metrics.frechet import (Extractor, FeatureStatistics, check_sample_count, fid, fid_and_inception_score,
                              image_statistics, inception_score, resolve_extractor)
from .metrics.toy import mmd, sliced_wasserstein
from .pipeline import build_data, sample_in_batches, sample_kwargs
from .train.trainer import resolve_device

METRICS = ("validity", "sliced_wasserstein", "mmd", "fid", "inception_score")
INCEPTION_METRICS = ("fid", "inception_score")


def evaluate(cfg: RunConfig, method, *, n_samples: int | None = None, generator=None, progress: bool = True,
             out_dir=None, stats_dir=None, extractor=None, extractor_name: str | None = None, tag: str = "") -> dict:
    """Sample ``n_samples`` (explicit: from the argument or ``eval.n_samples``), save them and compute
    ``eval.metrics``.

    Returns ``{"n_samples": ..., "sample_seconds": ..., "samples_path": ..., metric: value, ...}``. The
    samples go to ``out_dir`` (default ``cfg.out_dir``) as ``eval_samples_<n><tag>.npz``. FID and IS use the
    FID Inception from ``eval.fid_weights`` (or the torch hub cache), or a stand-in ``extractor`` named
    ``extractor_name`` (see :func:`pdlib.metrics.frechet.image_statistics`); FID's reference statistics
    are cached in ``stats_dir`` (default :func:`default_stats_dir`).
    """
    n = n_samples or cfg.eval.n_samples
    if n is None:
        raise ValueError("say how many samples to evaluate: --n-samples N or eval.n_samples=N")
    names = list(cfg.eval.metrics)
    for name in names:
        _validate.choice("eval.metrics item", name, METRICS)
    net = reference = None
    if any(name in INCEPTION_METRICS for name in names):
        net = resolve_extractor(extractor, extractor_name, cfg.eval.fid_weights, method_device(cfg, method))
    if "fid" in names:
        reference = reference_statistics(cfg, net, stats_dir=stats_dir, progress=progress)
        if not cfg.eval.allow_small:
            check_sample_count("FID", "reference", reference.n, reference.mu.shape[0])
            check_sample_count("FID", "generated", n, reference.mu.shape[0])
    start = time.perf_counter()
    samples = sample_in_batches(method, n, cfg.sample.batch_size, generator=generator, progress=progress,
                                **sample_kwargs(cfg))
    results = {"n_samples": n, "sample_seconds": time.perf_counter() - start}
    results["samples_path"] = str(save_samples(samples, Path(out_dir or cfg.out_dir) / f"eval_samples_{n}{tag}.npz"))
    inception = _inception_metrics(names, samples, reference, net, progress, cfg.eval.allow_small)
    for name in names:
        results[name] = inception[name] if name in inception else _metric(name, cfg, samples)
    return results


def method_device(cfg: RunConfig, method) -> torch.device:
    """Where the metrics' network runs: the device of the method's parameters (where it samples), or
    ``cfg.train.device`` for a method without parameters."""
    param = next(method.parameters(), None) if isinstance(method, torch.nn.Module) else None
    return param.device if param is not None else resolve_device(cfg.train.device)


def save_samples(samples: torch.Tensor, path) -> Path:
    """Write ``samples`` to the ``.npz`` file ``path`` (read back with ``numpy.load``, no pickle) under
    the key ``arr_0``: images [N, C, H, W] in [-1, 1] as the uint8 array [N, H, W, C] of their 8-bit levels
    (what FID sees, in the layout of guided-diffusion's evaluator), anything else (2D points) as float32."""
    if samples.ndim == 4:
        array = ((samples.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    else:
        array = samples.float().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, arr_0=array)
    return path


def _inception_metrics(names, samples, reference, extractor: Extractor, progress: bool,
                       allow_small: bool = False) -> dict:
    """The FID (against ``reference``) and IS of ``samples`` that ``names`` ask for, from one pass of
    ``extractor`` over the samples. ``allow_small``: FID from any number of samples, IS in
    ``min(10, n)`` splits (smoke tests only)."""
    kw = dict(extractor=extractor, progress=progress)
    splits = min(10, len(samples)) if allow_small else 10
    if "fid" in names and "inception_score" in names:
        distance, score = fid_and_inception_score(reference, samples, splits=splits, allow_small=allow_small, **kw)
        return {"fid": float(distance), "inception_score": float(score)}
    if "fid" in names:
        return {"fid": float(fid(reference, samples, allow_small=allow_small, **kw))}
    if "inception_score" in names:
        return {"inception_score": float(inception_score(samples, splits=splits, **kw))}
    return {}


def _metric(name: str, cfg: RunConfig, samples: torch.Tensor):
    """``validity`` of shape images, or a distance of 2D samples to fresh points of ``data.toy_set``."""
    if name == "validity":
        return float(shapes_validity(samples).float().mean())
    reference = toy2d(cfg.data.toy_set, len(samples), torch.Generator().manual_seed(cfg.data.seed + 1))
    return {"mmd": mmd, "sliced_wasserstein": sliced_wasserstein}[name](samples, reference)


# ------------------------------------------------------------------------------------------------
# FID reference statistics


def default_stats_dir() -> Path:
    """Where reference statistics are cached: ``$XDG_CACHE_HOME/pdlib/fid_stats``, by default
    ``~/.cache/pdlib/fid_stats``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pdlib" / "fid_stats"


def reference_statistics(cfg: RunConfig, extractor: Extractor, *, stats_dir=None,
                         progress: bool = True) -> FeatureStatistics:
    """``"pool3"`` statistics of the training images of ``cfg.data`` *without* the random flips of
    ``data.hflip`` (those augment training; FID compares with the data set itself).

    The data set is opened first (``DatasetUnavailableError`` at once when it is missing). The statistics
    are cached in ``stats_dir/<data name>-<key digest>.npz`` (mu, sigma, n and the key; no pickle), keyed
    by the data settings (name, absolute root, size, seed, ...), the training split, the number of images
    and the extractor (the SHA-256 of the Inception weights file, or a stand-in's name): a cached file
    is used only when every part of its key matches. Image files replaced in place (same count) are not
    noticed: delete the cached file then.
    """
    data_cfg = dataclasses.replace(cfg.data, hflip=False)
    data = build_data(dataclasses.replace(cfg, data=data_cfg))
    key = json.dumps(_stats_key(data_cfg, extractor, len(data)), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(stats_dir or default_stats_dir()) / f"{data_cfg.name}-{digest}.npz"
    cached = _load_statistics(path, key, extractor)
    if cached is not None:
        return cached
    stats = image_statistics(_image_batches(data, cfg.train.num_workers), extractor=extractor,
                             progress=progress)["pool3"]
    _save_statistics(path, key, stats)
    return stats


def _stats_key(data_cfg, extractor: Extractor, n: int) -> dict:
    data = dataclasses.asdict(data_cfg)
    del data["hflip"]  # always off for the reference
    if data["root"] is not None:
        data["root"] = str(Path(data["root"]).expanduser().resolve())
    weights = getattr(extractor.net, "weights_sha256", None)
    return {"data": data, "split": "train",  # build_data reads the training split
            "n": n, "extractor": f"sha256:{weights}" if weights else extractor.name}


def _image_batches(data, num_workers: int):
    """The images of ``data`` (a tensor, or a Dataset of ``(image, label)`` items) in batches."""
    if isinstance(data, torch.Tensor):
        return data
    loader = torch.utils.data.DataLoader(data, batch_size=250, num_workers=num_workers)
    return (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in loader)


def _load_statistics(path: Path, key: str, extractor: Extractor) -> FeatureStatistics | None:
    """The statistics cached at ``path`` if its key is ``key``, labelled with ``extractor``; else None."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != key:
            return None
        return FeatureStatistics(torch.from_numpy(f["mu"]), torch.from_numpy(f["sigma"]), int(f["n"]),
                                 extractor.name, extractor.comparable_to_published, "pool3")


def _save_statistics(path: Path, key: str, stats: FeatureStatistics) -> None:
    """Write ``stats`` to ``path`` through a temporary file, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, mu=stats.mu.numpy(), sigma=stats.sigma.numpy(), n=stats.n, key=np.array(key))
    os.replace(tmp, path)
