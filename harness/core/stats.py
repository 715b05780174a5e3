"""Summary statistics over runs, one definition each so every table and verdict agrees to
the last bit (statistics.fmean: an exactly rounded sum, then one division); and the seed-paired
test the stand-in's claims are decided by (`paired_verdict`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean, or None for no values."""
    return statistics.fmean(values) if values else None


def population_std(values: Sequence[float]) -> float:
    """The population standard deviation (ddof=0), as the paper reports over seeds."""
    return statistics.pstdev(values)


@dataclass(frozen=True)
class PairedVerdict:
    """A claim "A - B > 0" (direction "up"), "< 0" ("down") or "|A - B| < margin" ("within") judged on
    seed-paired differences."""
    verdict: str                  # HOLDS, CONTRADICTED or INCONCLUSIVE
    n: int                        # pairs (seeds)
    mean_difference: float | None
    low: float | None             # the confidence interval of the mean difference (None for n < 2)
    high: float | None
    confidence: float
    test: str                     # what was computed, for the ledger
    margin: float | None = None   # direction "within": the equivalence margin

    def describe(self) -> str:
        if self.low is None:
            return f"{self.verdict}: n={self.n}, too few pairs for an interval ({self.test})"
        margin = f" against the margin +-{self.margin:g}" if self.margin is not None else ""
        return (f"{self.verdict}: mean difference {self.mean_difference:+.4g}, {self.confidence:.0%} interval "
                f"[{self.low:+.4g}, {self.high:+.4g}]{margin}, n={self.n} ({self.test})")


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of paired differences: mean +- t(1 - a/2, n - 1) * s / sqrt(n),
    s the sample standard deviation (n - 1). Needs n >= 2; all-equal differences give a zero-width interval."""
    n = len(differences)
    if n < 2:
        raise ValueError("a t interval needs at least 2 pairs")
    from scipy.stats import t

    centre = statistics.fmean(differences)
    half = t.ppf(1 - (1 - confidence) / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return centre - half, centre + half


def paired_verdict(differences: Sequence[float], direction: str = "up", confidence: float = 0.95,
                   margin: float | None = None) -> PairedVerdict:
    """The verdict on "the difference is positive" (direction "up"), "negative" ("down"), or "smaller than
    `margin` either way" ("within", an equivalence claim). Up/down: holds when the t interval
    (`paired_interval`) excludes 0 on the claimed side, contradicted when it excludes 0 on the other.
    Within: holds when the interval lies inside (-margin, +margin), contradicted when it lies wholly
    outside [-margin, +margin]. Inconclusive otherwise, and with fewer than 2 pairs."""
    if direction not in ("up", "down", "within"):
        raise ValueError(f"direction must be 'up', 'down' or 'within', got {direction!r}")
    if (direction == "within") != (margin is not None):
        raise ValueError("give a margin with direction 'within', and only then")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    values = [float(value) for value in differences]
    if any(not math.isfinite(value) for value in values):
        raise ValueError(f"differences must be finite numbers, got {values}")
    test = f"paired t interval, {len(values) - 1} degrees of freedom" if len(values) >= 2 else "paired t interval"
    if len(values) < 2:
        return PairedVerdict(INCONCLUSIVE, len(values), values[0] if values else None, None, None, confidence, test,
                             margin)
    low, high = paired_interval(values, confidence)
    if direction == "within":
        if -margin < low and high < margin:
            verdict = HOLDS
        elif low > margin or high < -margin:
            verdict = CONTRADICTED
        else:
            verdict = INCONCLUSIVE
    else:
        sign = 1 if direction == "up" else -1
        if sign * low > 0 and sign * high > 0:
            verdict = HOLDS
        elif sign * low < 0 and sign * high < 0:
            verdict = CONTRADICTED
        else:
            verdict = INCONCLUSIVE
    return PairedVerdict(verdict, len(values), statistics.fmean(values), low, high, confidence, test, margin)
