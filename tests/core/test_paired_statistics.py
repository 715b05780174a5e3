"""The seed-paired t interval and verdicts of the stand-in's claims, on hand-computed cases."""

import math

import pytest

from harness.core.stats import CONTRADICTED, HOLDS, INCONCLUSIVE, paired_interval, paired_verdict

T_975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}   # t(0.975, df), from tables


def test_the_interval_is_mean_plus_minus_t_times_the_standard_error():
    # [2, 3, 4, 3]: mean 3, s = sqrt(2/3), se = s / 2, df 3
    low, high = paired_interval([2, 3, 4, 3])
    half = T_975[3] * math.sqrt(2 / 3) / 2
    assert (low, high) == pytest.approx((3 - half, 3 + half), rel=1e-12)
    assert (low, high) == pytest.approx((1.700771, 4.299229), abs=1e-6)


@pytest.mark.parametrize("differences, direction, verdict, interval", [
    ([2, 3, 4, 3], "up", HOLDS, (1.700771, 4.299229)),
    ([2, 3, 4, 3], "down", CONTRADICTED, (1.700771, 4.299229)),
    ([-2, -3, -4, -3], "down", HOLDS, (-4.299229, -1.700771)),
    # [1, 2, 3]: mean 2, s 1, se 1/sqrt(3), df 2: 2 +- 2.484138 straddles 0
    ([1, 2, 3], "up", INCONCLUSIVE, (-0.484138, 4.484138)),
    # five seeds of +0.12, +0.14, +0.15, +0.13, +0.16: mean 0.14, s 0.0158114, df 4
    ([0.12, 0.14, 0.15, 0.13, 0.16], "up", HOLDS, (0.14 - T_975[4] * 0.0158113883 / math.sqrt(5),
                                                  0.14 + T_975[4] * 0.0158113883 / math.sqrt(5))),
])
def test_verdicts(differences, direction, verdict, interval):
    result = paired_verdict(differences, direction)
    assert result.verdict == verdict and result.n == len(differences)
    assert (result.low, result.high) == pytest.approx(interval, abs=1e-6)
    assert result.mean_difference == pytest.approx(sum(differences) / len(differences))
    assert f"n={len(differences)}" in result.describe() and "degrees of freedom" in result.describe()


def test_one_pair_is_inconclusive_and_bad_input_is_refused():
    result = paired_verdict([0.5])
    assert result.verdict == INCONCLUSIVE and result.low is None and "too few pairs" in result.describe()
    with pytest.raises(ValueError, match="finite"):
        paired_verdict([0.1, float("nan")])
    with pytest.raises(ValueError, match="direction"):
        paired_verdict([0.1, 0.2], "sideways")


def test_identical_differences_give_a_zero_width_interval():
    result = paired_verdict([0.05, 0.05, 0.05])
    assert result.verdict == HOLDS and result.low == result.high == pytest.approx(0.05)


@pytest.mark.parametrize("differences, margin, verdict", [
    # [0.5, 1, 1.5]: mean 1, s 0.5, se 0.5/sqrt(3), df 2: 1 +- 1.242069 = [-0.242069, 2.242069]
    ([0.5, 1, 1.5], 3.0, HOLDS),            # inside (-3, 3)
    ([0.5, 1, 1.5], 2.0, INCONCLUSIVE),     # reaches past +2
    ([4.5, 5, 5.5], 2.0, CONTRADICTED),     # [3.757931, 6.242069]: wholly above +2
    ([-4.5, -5, -5.5], 2.0, CONTRADICTED),  # wholly below -2
])
def test_within_a_margin(differences, margin, verdict):
    result = paired_verdict(differences, "within", margin=margin)
    assert result.verdict == verdict and result.margin == margin
    centre = sum(differences) / 3
    half = T_975[2] * 0.5 / math.sqrt(3)
    assert (result.low, result.high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert (result.low, result.high)[0] == pytest.approx(centre - 1.242069, abs=1e-6)


def test_a_margin_goes_with_within_only():
    with pytest.raises(ValueError, match="margin"):
        paired_verdict([0.1, 0.2], "within")
    with pytest.raises(ValueError, match="margin"):
        paired_verdict([0.1, 0.2], "up", margin=1.0)
    with pytest.raises(ValueError, match="margin"):
        paired_verdict([0.1, 0.2], "within", margin=0.0)
