"""The digits quality metrics: a held-out split, a classifier that works, and scores that separate real
digits from noise and from a collapsed generator."""

import pytest
import torch

from pdlib.data.images import digits
from pdlib.metrics.digits import digits_quality, train_digits_classifier


@pytest.fixture(scope="module")
def classifier():
    return train_digits_classifier(epochs=15)


def test_split_is_fixed_disjoint_and_complete():
    xa, ya = digits(8)
    xtr, ytr = digits(8, "train")
    xte, yte = digits(8, "test")
    assert len(xtr) + len(xte) == len(xa) == 1797 and len(xte) == 539
    rows = {tuple(r.tolist()) + (int(c),) for r, c in zip(xa.flatten(1), ya)}
    split = [tuple(r.tolist()) + (int(c),) for r, c in zip(torch.cat([xtr, xte]).flatten(1), torch.cat([ytr, yte]))]
    assert set(split) == rows  # nothing lost, labels travel with their images
    assert torch.equal(digits(8, "test")[0], xte)
    assert set(yte.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="split"):
        digits(8, "val")


def test_classifier_accuracy(classifier):
    _, accuracy = classifier
    assert accuracy > 0.93


def test_scores_separate_real_noise_and_collapse(classifier):
    clf, _ = classifier
    train, labels = digits(8, "train")
    real = digits_quality(train[-400:], clf)
    noise = digits_quality(torch.rand(400, 1, 8, 8) * 2 - 1, clf)
    ones = train[labels == 1]
    collapsed = digits_quality(ones[torch.arange(400) % len(ones)], clf)
    assert real["samples"]["precision"] > 0.8 and real["samples"]["recall"] > 0.8
    assert real["samples"]["frechet"] < 3 * real["floor"]["frechet"]
    assert noise["samples"]["precision"] < 0.4 and noise["samples"]["frechet"] > 20 * real["floor"]["frechet"]
    assert collapsed["samples"]["recall"] < 0.3  # one class covers little of the held-out manifold
    assert collapsed["class_counts"][1] > 0.8 * 400 and sum(c > 0 for c in real["class_counts"]) == 10
    assert real["floor"] == noise["floor"]  # the floor depends on the sample count only
    with pytest.raises(ValueError, match="samples"):
        digits_quality(train[:2], clf)
