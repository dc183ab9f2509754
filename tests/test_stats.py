"""stats.py: Student's t against table values, Welch's interval and the detectable difference by hand."""
import math
import statistics

import pytest

from stats import t_cdf, t_quantile, welch


@pytest.mark.parametrize("p,df,table", [(0.975, 9, 2.262), (0.975, 18, 2.101), (0.8, 18, 0.862),
                                        (0.975, 2, 4.303), (0.8, 4, 0.941), (0.975, 1000, 1.962)])
def test_t_quantiles_match_the_table(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=1e-3)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_t_cdf_is_symmetric():
    assert t_cdf(0.0, 5) == pytest.approx(0.5) and t_cdf(-1.0, 5) == pytest.approx(1 - t_cdf(1.0, 5))


def test_welch_by_hand():
    a, b = [99.5, 99.6, 99.4, 99.7], [99.3, 99.4, 99.2]
    result = welch(a, b)
    va, vb = statistics.variance(a) / 4, statistics.variance(b) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    se = math.sqrt(va + vb)
    assert result["difference"] == pytest.approx(0.25) and result["df"] == pytest.approx(df)
    assert result["low"] == pytest.approx(0.25 - t_quantile(0.975, df) * se)
    assert result["separated"] == (result["low"] > 0)
    assert result["detectable"] == pytest.approx((t_quantile(0.975, df) + t_quantile(0.8, df)) * se)


def test_equal_samples_are_not_separated():
    result = welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert result["difference"] == 0 and not result["separated"] and result["low"] < 0 < result["high"]
