"""Rates measured on samples, with their uncertainty."""

from __future__ import annotations

import math

from .. import _validate


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a rate ``k / n``: 95 % for ``z = 1.96``. Unlike the
    normal approximation it stays inside [0, 1] and is sensible at rates near 0 or 1."""
    _validate.positive_int("n", n)
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got {k}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
