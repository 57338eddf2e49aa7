"""Whether a difference between two training recipes exceeds the noise of the experiment that measured it.

A book experiment trains each recipe ("row") with a few seeds and measures a rate on ``n`` samples per run.
Two kinds of noise blur a difference between two rows' seed means: the *binomial* noise of each measured
rate (its 95 % Wilson half-width; for a mean over seeds against another such mean the standard error of the
difference is about one run's, so one run's half-width is the yardstick) and the *seed* noise (how far
runs that differ only in their seed land apart: the range of a row's values; with two seeds it is about one
standard deviation of a difference of two-seed means, with more seeds the range is a wider, more cautious
bar). The rule of the book's chapters 9 and 10: a difference **exceeds the
noise** when it is larger than both the largest seed spread and the largest half-width of the runs
involved. It is a weak bar on purpose: a difference that fails it is not resolved, one that passes it is
worth more seeds, not a proof.
"""

from __future__ import annotations

from typing import Sequence


def compare_rows(a: Sequence[float], b: Sequence[float], half_widths: Sequence[float] = (),
                 higher_is_better: bool = True) -> dict:
    """Change from row ``a`` to row ``b`` (each a value per seed, the same number of seeds, at least two)
    and whether it exceeds the noise (module docstring). ``half_widths``: the binomial half-widths of the
    runs involved (empty for a measure without an interval). Returns ``{"diff", "spread", "half",
    "verdict"}`` with verdict ``"better"`` / ``"worse"`` (for ``b``) or ``"unresolved"``."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"both rows need the same number (>= 2) of seeds, got {len(a)} and {len(b)}")
    if any(h < 0 for h in half_widths):
        raise ValueError(f"half-widths must be >= 0, got {list(half_widths)}")
    diff = sum(b) / len(b) - sum(a) / len(a)
    spread = max(max(a) - min(a), max(b) - min(b))
    half = max(half_widths, default=0.0)
    resolved = abs(diff) > spread and abs(diff) > half
    verdict = (("better" if (diff > 0) == higher_is_better else "worse") if resolved else "unresolved")
    return {"diff": diff, "spread": spread, "half": half, "verdict": verdict}


__all__ = ["compare_rows"]
