"""The statistics behind every verdict (docs/reports.md, "How sure"): a figure over repeats
as an estimate with an interval, whether two figures can be told apart, and the interval of
the ratio of two runs' figures.

The unit of evidence is the **repeat**: one cell, run once, gives one value of a metric
(its time to target, its median tokens/s). Repeats of a cell in one run are interleaved with
the other backends' (suite/matrix.py), so load that comes and goes hits every backend alike;
the spread of a cell's repeat values is the run-to-run noise the verdict must survive.

- estimate(values): the median over repeats, with a percentile-bootstrap interval of the
  median (CONFIDENCE, resampling the repeats). With n < 6 repeats the bootstrap's quantiles
  are the smallest and largest value, so the interval is [min, max], whose coverage of the
  true median is 1 - 2^(1-n) (75% at 3 repeats, 94% at 5): stated, not hidden. One repeat
  has no interval (low = high = None).
- told_apart(a, b): two estimates differ when both have an interval, the intervals are
  disjoint and the medians differ by more than MIN_EFFECT. Otherwise they are tied.
- ratio(a_values, b_values): B/A as the ratio of the medians, with a bootstrap interval that
  resamples both runs' repeats; it is a change when the interval lies wholly beyond
  1 +- MIN_EFFECT. A side with one repeat gives no interval and never a change.

Under the null (both runs draw their repeats from one distribution) a change at 3 repeats
per run needs all three of B beyond all three of A, probability 2 / C(6, 3) = 10% whatever
the noise, and beyond them by MIN_EFFECT too, which makes it rarer the smaller the noise is
against MIN_EFFECT (tests/test_stats.py measures both). Deterministic: a fixed generator
seed, so the same records give the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
MIN_EFFECT = 0.05  # a change smaller than 5% is never called, whatever the interval
RESAMPLES = 4000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    median: float | None
    low: float | None   # None: no interval (fewer than 2 repeats)
    high: float | None
    n: int              # repeats with a finite value

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    def to_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high}


def finite(values) -> np.ndarray:
    """The finite numbers among values (None, NaN, inf and bools left out)."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    arr = np.asarray(xs, dtype=float)
    return arr[np.isfinite(arr)]


def _bootstrap_medians(xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(xs), size=(RESAMPLES, len(xs)))
    return np.median(xs[idx], axis=1)


def _quantiles(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2
    # "lower"/"higher": the interval's ends are resampled medians (for an even number of
    # repeats a resampled median may itself be the mean of two values), never interpolated
    return (float(np.quantile(samples, tail, method="lower")),
            float(np.quantile(samples, 1 - tail, method="higher")))


def estimate(values) -> Estimate:
    """The median of the repeat values with its bootstrap interval (module doc)."""
    xs = finite(values)
    if xs.size == 0:
        return Estimate(None, None, None, 0)
    med = float(np.median(xs))
    if xs.size == 1:
        return Estimate(med, None, None, 1)
    low, high = _quantiles(_bootstrap_medians(xs, np.random.default_rng(SEED)))
    return Estimate(med, low, high, int(xs.size))


def told_apart(a: Estimate, b: Estimate, min_effect: float = MIN_EFFECT) -> bool:
    """Whether a and b differ beyond their noise: both have intervals, disjoint, and medians
    more than min_effect apart (as a ratio)."""
    if not (a.has_interval and b.has_interval) or not a.median or not b.median:
        return False
    disjoint = a.high < b.low or b.high < a.low
    return disjoint and max(a.median, b.median) / min(a.median, b.median) > 1 + min_effect


@dataclass(frozen=True)
class Ratio:
    ratio: float | None
    low: float | None
    high: float | None
    changed: bool  # the interval lies wholly beyond 1 +- MIN_EFFECT
    note: str      # why there is no interval, or ""


def ratio(a_values, b_values, min_effect: float = MIN_EFFECT) -> Ratio:
    """B/A of the medians with a bootstrap interval over both runs' repeats (module doc)."""
    a, b = finite(a_values), finite(b_values)
    if a.size == 0 or b.size == 0:
        return Ratio(None, None, None, False, "no value in " + ("run A" if a.size == 0 else "run B"))
    ma, mb = float(np.median(a)), float(np.median(b))
    r = mb / ma if ma else math.nan
    if a.size < 2 or b.size < 2:
        return Ratio(r, None, None, False, "one repeat: no run-to-run noise known, never flagged")
    if np.any(a <= 0) or np.any(b <= 0):
        return Ratio(r, None, None, False, "values not positive: no ratio interval")
    rng = np.random.default_rng(SEED)
    low, high = _quantiles(_bootstrap_medians(b, rng) / _bootstrap_medians(a, rng))
    changed = low > 1 + min_effect or high < 1 / (1 + min_effect)
    return Ratio(r, low, high, bool(changed), "")


def coverage(n: int) -> float | None:
    """The coverage of the true median by [min, max] of n repeats (what the interval is for
    n < 6): 1 - 2^(1-n); None for n < 2."""
    return None if n < 2 else 1 - 2.0 ** (1 - n)
