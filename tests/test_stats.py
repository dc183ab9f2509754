"""stats.py: Student's t against table values; Welch's and the paired interval, and the detectable difference,
by hand."""
import math
import statistics

import pytest

from plumbing.stats import paired, t_quantile, welch


@pytest.mark.parametrize("p,df,table", [(0.975, 9, 2.262), (0.975, 18, 2.101), (0.8, 18, 0.862),
                                        (0.975, 2, 4.303), (0.8, 4, 0.941), (0.975, 1000, 1.962),
                                        (0.99167, 5, 3.534)])  # the last: 95% Bonferroni over 3 comparisons
def test_t_quantiles_match_the_table(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=2e-3)


def test_welch_by_hand():
    a, b = [99.5, 99.6, 99.4, 99.7], [99.3, 99.4, 99.2]
    result = welch(a, b)
    va, vb = statistics.variance(a) / 4, statistics.variance(b) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    se = math.sqrt(va + vb)
    assert result["difference"] == pytest.approx(0.25) and result["df"] == pytest.approx(df)
    assert result["low"] == pytest.approx(0.25 - t_quantile(0.975, df) * se)
    assert result["high"] == pytest.approx(0.25 + t_quantile(0.975, df) * se)
    assert result["separated"] == (result["low"] > 0)
    assert result["detectable"] == pytest.approx((t_quantile(0.975, df) + t_quantile(0.8, df)) * se)


def test_equal_samples_are_not_separated():
    result = welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert result["difference"] == 0 and not result["separated"] and result["low"] < 0 < result["high"]


def test_paired_by_hand_with_the_bonferroni_level():
    a, b = [99.50, 99.41, 99.60, 99.47, 99.55, 99.52], [99.44, 99.40, 99.51, 99.45, 99.47, 99.50]
    d = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(d) / math.sqrt(6)
    for family in (1, 3):
        t = t_quantile(1 - 0.05 / family / 2, 5)
        result = paired(a, b, family=family)
        assert result["difference"] == pytest.approx(statistics.mean(d))
        assert (result["low"], result["high"]) == pytest.approx((statistics.mean(d) - t * se, statistics.mean(d) + t * se))
        assert result["separated"] == (result["low"] > 0)
        assert result["detectable"] == pytest.approx((t + t_quantile(0.8, 5)) * se)
    assert paired(a, b)["low"] > paired(a, b, family=3)["low"]  # the correction widens the interval


def test_pairing_removes_what_the_seeds_share():
    # each seed moves both variants alike (a machine or an initialization): Welch sees the spread, pairing does not
    shared = [0.0, 0.3, -0.2, 0.1, -0.3, 0.2]
    a, b = [99.5 + s + e for s, e in zip(shared, [0.01, 0.0, 0.02, 0.01, 0.0, 0.02])], [99.45 + s for s in shared]
    assert paired(a, b)["separated"] and not welch(a, b)["separated"]


def test_paired_needs_two_equal_lists():
    with pytest.raises(ValueError, match="two equal lists"):
        paired([1.0, 2.0], [1.0])


def test_welch_table_adjusts_over_its_family_and_names_the_verdict():
    from lab.sections import welch_table
    apart, close = ([99.3, 99.31, 99.29], [98.5, 98.52, 98.48]), ([99.3, 99.2, 99.4], [99.25, 99.35, 99.2])
    table = welch_table([("BN", *apart[:1], "GN", *apart[1:]), ("GN", close[0], "LN", close[1])]).splitlines()
    assert "97.5% interval (Welch)" in table[0]  # two comparisons: 1 - 0.05/2
    assert table[2].startswith("| BN − GN | 3 + 3 | 99.30 | 98.50 | +0.80 |") and table[2].endswith("| **separated** |")
    wide = welch(*close, alpha=0.025)
    assert f"{wide['low']:+.2f} to {wide['high']:+.2f} | not told apart (would detect {wide['detectable']:.2f}) |" in table[3]
    assert "| A − B (norm) | 95% interval (Welch) |" in welch_table([("BN", close[0], "GN", close[1])], unit="norm")


def test_one_model_tested_two_ways_is_paired_in_the_welch_table():
    from lab.sections import welch_table
    # each seed's model loses about 0.1 tested the other way; the seeds themselves spread far more than that
    running, batch_stats = {0: 99.0, 1: 99.4, 2: 98.6}, {2: 98.49, 0: 98.9, 1: 99.31}  # paired by seed, not order
    table = welch_table([("BN (batch stats)", batch_stats, "BN", running, True),
                         ("BN (batch stats)", batch_stats, "BN", running)]).splitlines()
    assert "97.5% interval (Welch; paired: one model tested two ways)" in table[0]
    assert table[2].startswith("| BN (batch stats) − BN | 3 paired | 98.90 | 99.00 | -0.10 |")
    assert table[2].endswith("| **separated** |")
    assert table[3].startswith("| BN (batch stats) − BN | 3 + 3 |") and "not told apart" in table[3]
    one_missing = welch_table([("A", {0: 1.0, 1: 2.0, 2: 3.5}, "B", {1: 1.9, 2: 3.3, 3: 9.0}, True)])
    assert "| A − B | 2 paired | 2.75 | 2.60 | +0.15 |" in one_missing  # seeds 1 and 2, the ones both have


def test_an_undefined_interval_is_never_separated_and_a_constant_group_is_fine():
    assert not welch([99.0, 99.0, 99.0], [99.0, 99.0, 99.0])["separated"]  # no spread at all: NaN, not a verdict
    constant = welch([0.83, 0.83, 0.83], [0.83, 2.5, 0.0])  # one group without spread, the other with
    assert math.isfinite(constant["low"]) and not constant["separated"]
