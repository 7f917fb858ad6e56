"""One number format per unit, for every table of the report (and for the headline to use):
a reader compares numbers across sections only when they are written alike.

Rules: three significant figures with thousands separators (142,345 tokens/s -> "142,000";
4,161 -> "4,160"; 0.05801 -> "0.0580"); MFU and other fractions as percent with two
significant figures below 10% ("5.8%", "12%"); whole counts exact ("1,024"); tiny errors
(conformance) in scientific notation. Every function returns "" for a missing value (None,
NaN), so an empty cell means "not measured". The unit goes in the column title, not the cell
("tokens/s", "ms", "s", "MB"); only percent carries its sign.
"""

from __future__ import annotations

import math

SIGNIFICANT = 3


def _missing(v) -> bool:
    if v is None or isinstance(v, bool):
        return True
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError):
        return True


def number(v, sig: int = SIGNIFICANT) -> str:
    """sig significant figures, thousands separators, no exponent."""
    if _missing(v):
        return ""
    v = float(v)
    if v == 0:
        return "0"
    exponent = math.floor(math.log10(abs(v)))
    decimals = sig - 1 - exponent
    rounded = round(v, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > exponent:  # 9.996 -> 10.0: one digit fewer
        decimals -= 1
    return f"{rounded:,.{max(decimals, 0)}f}"


# named for the call site; one rule for them all
def rate(v) -> str:
    """tokens/s, TFLOP/s, GFLOP/s"""
    return number(v)


def seconds(v) -> str:
    return number(v)


def ms(v) -> str:
    return number(v)


def mb(v) -> str:
    return number(v)


def pct(fraction) -> str:
    """A fraction as percent: 0.05801 -> "5.8%", 0.1234 -> "12%", 1.0 -> "100%"."""
    if _missing(fraction):
        return ""
    p = 100 * float(fraction)
    return number(p, 2 if abs(p) < 100 else 3) + "%"


def count(v) -> str:
    """A whole number exactly: batch sizes, steps, cells."""
    if _missing(v):
        return ""
    return f"{int(round(float(v))):,}"


def tick(v) -> str:
    """An axis label at a round value, as short as it is exact: 3000 -> "3,000", 1.5 -> "1.5"."""
    if _missing(v):
        return ""
    return f"{float(v):,.6f}".rstrip("0").rstrip(".")


def sci(v) -> str:
    """An error or tolerance, which spans many decades: 2 significant figures, exponent form."""
    if _missing(v):
        return ""
    return f"{float(v):.1e}"


def spread(median, low, high, fmt=number) -> str:
    """A median with its interval: "142,000 [138,000-145,000]" (no interval: the median alone)."""
    if _missing(median):
        return ""
    if _missing(low) or _missing(high):
        return fmt(median)
    return f"{fmt(median)} [{fmt(low)}-{fmt(high)}]"
