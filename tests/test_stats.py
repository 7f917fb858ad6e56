"""reports/stats.py against known truth: a known difference is found, identical distributions
are flagged no more often than the stated rate, and the interval's documented form holds."""

import math
from itertools import combinations

import numpy as np
import pytest

from reports import stats


def test_estimate_of_few_repeats_is_min_max_and_one_repeat_has_no_interval():
    e = stats.estimate([3.0, 1.0, 2.0])
    assert (e.median, e.low, e.high, e.n) == (2.0, 1.0, 3.0, 3)
    e5 = stats.estimate([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (e5.low, e5.high) == (1.0, 5.0)
    one = stats.estimate([7.0, float("nan"), None])
    assert (one.median, one.low, one.high, one.n) == (7.0, None, None, 1)
    assert not one.has_interval
    assert stats.estimate([]).median is None


def test_estimate_of_many_repeats_is_narrower_than_the_range_and_covers_the_median():
    rng = np.random.default_rng(1)
    misses = 0
    for _ in range(300):
        xs = rng.normal(10.0, 1.0, size=15)
        e = stats.estimate(xs)
        assert xs.min() < e.low <= e.median <= e.high < xs.max()
        misses += not (e.low <= 10.0 <= e.high)
    # a 95% interval of the median misses the true median (10) about 5% of the time
    assert misses / 300 < 0.10


def test_coverage_of_min_max_is_what_the_docs_say():
    # exchangeability: the true median lies outside [min, max] of n draws when all n fall on one side
    rng = np.random.default_rng(2)
    for n in (2, 3, 5):
        xs = rng.normal(size=(20000, n))
        inside = (xs.min(axis=1) <= 0) & (0 <= xs.max(axis=1))
        assert inside.mean() == pytest.approx(stats.coverage(n), abs=0.01)
    assert stats.coverage(3) == 0.75 and stats.coverage(1) is None


def test_told_apart_needs_disjoint_intervals_and_the_minimum_effect():
    a = stats.estimate([1.00, 1.02, 1.01])
    assert not stats.told_apart(a, stats.estimate([1.03, 1.04, 1.035]))  # disjoint, but 3% apart
    assert stats.told_apart(a, stats.estimate([1.40, 1.45, 1.38]))       # 40% slower
    assert not stats.told_apart(a, stats.estimate([1.0, 1.5, 1.45]))     # overlapping
    assert not stats.told_apart(a, stats.estimate([9.0]))               # one repeat: no interval


def test_ratio_finds_a_known_difference():
    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.03, size=3)
    b = rng.normal(1.4, 0.03 * 1.4, size=3)
    r = stats.ratio(a, b)
    assert r.changed and r.low > 1.05 and r.low <= r.ratio <= r.high
    assert r.ratio == pytest.approx(np.median(b) / np.median(a))
    # and the other way round: a speed-up is a change too
    assert stats.ratio(b, a).changed and stats.ratio(b, a).high < 1 / 1.05


@pytest.mark.parametrize("noise", [0.02, 0.10, 0.50])
def test_identical_distributions_are_flagged_at_most_at_the_stated_rate(noise):
    """3 repeats per run, both from one distribution: flagged at most 2 / C(6,3) = 10% of the
    time at any noise level, and almost never when the noise is small against MIN_EFFECT."""
    rng = np.random.default_rng(4)
    trials = 2000
    flagged = sum(stats.ratio(rng.lognormal(0, noise, 3), rng.lognormal(0, noise, 3)).changed
                  for _ in range(trials))
    bound = 2 / math.comb(6, 3)
    assert flagged / trials <= bound + 3 * math.sqrt(bound * (1 - bound) / trials)
    if noise <= 0.02:
        assert flagged / trials < 0.01


def test_the_ten_percent_bound_is_exact_for_three_repeats():
    """Under exchangeability every 3-of-6 split is equally likely; a change needs all of B on
    one side of all of A: 2 of the C(6,3) = 20 splits."""
    values = np.array([1.0, 1.2, 1.5, 1.9, 2.4, 3.0])  # far apart: every disjoint split is > 5%
    flags = 0
    for idx in combinations(range(6), 3):
        a = values[list(idx)]
        b = np.delete(values, list(idx))
        flags += stats.ratio(a, b).changed
    assert flags == 2


def test_one_repeat_gives_a_ratio_but_never_a_change():
    r = stats.ratio([1.0], [2.0])
    assert r.ratio == 2.0 and r.low is None and not r.changed and "one repeat" in r.note


def test_deterministic():
    xs = [1.0, 1.3, 0.9, 1.1, 1.2, 1.05, 0.95]
    assert stats.estimate(xs) == stats.estimate(xs)
    assert stats.ratio(xs, xs[::-1]) == stats.ratio(xs, xs[::-1])
