"""Summary statistics over runs, one definition each so every table and verdict agrees to
the last bit (statistics.fmean: an exactly rounded sum, then one division)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean, or None for no values."""
    return statistics.fmean(values) if values else None


def population_std(values: Sequence[float]) -> float:
    """The population standard deviation (ddof=0), as the paper reports over seeds."""
    return statistics.pstdev(values)
