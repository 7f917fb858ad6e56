"""The domains of `gptbench`'s arguments, checked by argparse as it parses: a value out of
its domain ends the command at once, before any work, with exit code 2 and a line naming
the flag and what it takes (argparse's own form: `error: argument --steps: ...`).

Limits (a budget, a timeout) are a number > 0 or `none`: 0 is neither "no limit" nor a
limit that could ever hold, so it is refused rather than guessed at.
"""

from __future__ import annotations

import argparse
import re

from gptspec.limits import quote

# the device kinds the suite knows (a cell's device, docs/records.md); cuda takes an index
DEVICES = ("cpu", "cuda", "cuda:N", "mps")
CALIBRATE_DEVICES = ("cpu", "cuda", "cuda:N")  # what suite/calibrate.py measures
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")
_CALIBRATE_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def integer(minimum: int, maximum: int | None = None):
    """An int >= minimum (counts: steps, threads, batch sizes; seeds: >= 0), and <= maximum
    where one is documented (gptspec/limits.py)."""
    expected = f"an integer >= {minimum}" if maximum is None else \
        f"an integer from {minimum} to {maximum:,} (its limit, docs/spec.md)"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {quote(text)}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


def _float(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {quote(text)}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {quote(text)}")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    value = _float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {quote(text)}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0 (a temperature: 0 is greedy)."""
    value = _float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {quote(text)}")
    return value


def limit(text: str) -> float | None:
    """A budget or a timeout: a number > 0, or `none` for no limit."""
    if text.strip().lower() == "none":
        return None
    value = _float(text, "a number > 0, or none for no limit")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, or none for no limit, got {quote(text)}")
    return value


def device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DEVICES)}, got {quote(text)}")
    return text


def calibrate_device(text: str) -> str:
    if not _CALIBRATE_DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"calibration measures {', '.join(CALIBRATE_DEVICES)}, not {quote(text)}")
    return text
