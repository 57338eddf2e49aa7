"""``pdlib.metrics.comparison.compare_rows``: the book's rule for a difference that exceeds the noise."""

import pytest

from pdlib.metrics.comparison import compare_rows


def test_a_difference_beyond_spread_and_half_width_is_resolved():
    out = compare_rows([0.20, 0.24], [0.90, 0.92], [0.03, 0.04])
    assert out["diff"] == pytest.approx(0.69) and out["spread"] == pytest.approx(0.04)
    assert out["half"] == 0.04 and out["verdict"] == "better"
    assert compare_rows([0.90, 0.92], [0.20, 0.24], [0.03])["verdict"] == "worse"
    assert compare_rows([3.0, 3.2], [1.0, 1.1], higher_is_better=False)["verdict"] == "better"  # a distance


@pytest.mark.parametrize("a, b, halves", [
    ([0.20, 0.53], [0.40, 0.45], [0.02]),  # within the seed spread of a
    ([0.50, 0.51], [0.53, 0.54], [0.04]),  # beyond the spread, within the binomial half-width
])
def test_a_difference_inside_either_noise_is_unresolved(a, b, halves):
    assert compare_rows(a, b, halves)["verdict"] == "unresolved"


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="same number"):
        compare_rows([0.1], [0.2])
    with pytest.raises(ValueError, match="same number"):
        compare_rows([0.1, 0.2], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="half-widths"):
        compare_rows([0.1, 0.2], [0.2, 0.3], [-0.1])
