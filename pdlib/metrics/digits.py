"""Quality of generated 8x8 digits in the feature space of a classifier trained on scikit-learn's digits.

FID's Inception network cannot judge 8x8 grey digits, and a classifier's confidence alone measures
nothing (a small network is confidently wrong on most noise images). So, as FID does with Inception, we
train a small CNN on the fixed ``"train"`` split of ``pdlib.data.digits``, report its accuracy on the
held-out ``"test"`` split, and compare generated samples with the held-out digits in the CNN's
penultimate features: improved precision and recall (Kynkaenniemi et al. 2019, k-NN manifolds) and the
Frechet distance (Heusel et al. 2017, eq. 6). Each number comes with its **real-vs-real floor**: the
same metric for as many real training digits as samples, against the same held-out digits, which is
what a perfect generator of this data would score. The class histogram of the samples (the
classifier's arg-max) shows whether every digit is drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .frechet import feature_statistics, frechet_distance
from .prdc import precision_recall


class DigitsClassifier(nn.Module):
    """A small CNN for ``[B, 1, 8, 8]`` digits in ``[-1, 1]``: two 3x3 convolutions (32, 64 channels),
    2x2 average pooling, a ``features``-wide hidden layer (the feature space), and 10 logits."""

    def __init__(self, width: int = 32, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * width * 16, features), nn.ReLU())
        self.head = nn.Linear(features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        _validate.tensor("x", x, ndim=4)
        if tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"the digits classifier takes [B, 1, 8, 8] images, got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_digits_classifier(epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
                            seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Train a ``DigitsClassifier`` on the ``"train"`` split (Adam, one-pixel random shifts as
    augmentation) and return it in eval mode with its accuracy on the held-out ``"test"`` split.
    About 10 s on 2 CPU cores; deterministic for a given ``seed``."""
    from ..data.images import digits

    x, y = digits(size=8, split="train")
    x_test, y_test = digits(size=8, split="test")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = DigitsClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    clf.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for idx in order.split(batch_size):
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = (clf(x_test).argmax(1) == y_test).float().mean().item()
    return clf, accuracy


def _scores(clf: DigitsClassifier, real: torch.Tensor, fake: torch.Tensor, k: int) -> dict:
    with torch.no_grad():
        f_real, f_fake = clf.features(real).double(), clf.features(fake).double()
    pr = precision_recall(f_real, f_fake, k=k)
    a, b = feature_statistics(f_real), feature_statistics(f_fake)
    return {"precision": round(pr.precision, 4), "recall": round(pr.recall, 4),
            "frechet": round(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), 4)}


def digits_quality(samples: torch.Tensor, classifier: DigitsClassifier, k: int = 3, seed: int = 0) -> dict:
    """Precision, recall and Frechet distance of ``samples`` [N, 1, 8, 8] against the held-out digits in
    ``classifier``'s features, each beside its real-vs-real floor (N real training digits, chosen with
    ``seed``, against the same held-out digits), and the class histogram of the samples.

    Returns ``{"samples": {...}, "floor": {...}, "class_counts": [10 ints], "n": N, "n_real": M, "k": k}``.
    N may not exceed the 1258 training digits (the floor needs as many)."""
    from ..data.images import digits

    _validate.tensor("samples", samples, ndim=4)
    real, _ = digits(size=8, split="test")
    train, _ = digits(size=8, split="train")
    n = len(samples)
    if not k < n <= len(train):
        raise ValueError(f"digits_quality needs between {k + 1} and {len(train)} samples, got {n}")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    samples = samples.detach().float().cpu().clamp(-1, 1)
    with torch.no_grad():
        counts = torch.bincount(classifier(samples).argmax(1), minlength=10)
    return {"samples": _scores(classifier, real, samples, k), "floor": _scores(classifier, real, train[pick], k),
            "class_counts": counts.tolist(), "n": n, "n_real": len(real), "k": k}
