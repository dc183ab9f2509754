"""How far the seeds carry a comparison: SciPy's t intervals, and the study's rules on top of them.

- `welch`: two independent groups of seeds (runs not paired by machine), Welch's interval of the difference of means;
- `paired`: each seed's two runs trained on one machine, the t interval of the per-seed differences,
  Bonferroni-adjusted over the `family` of comparisons a row reports (docs/protocol.md);
- both: the smallest true difference the seeds would detect with probability POWER.
"""
import contextlib
import math
import statistics
import warnings

from scipy import stats

ALPHA, POWER = 0.05, 0.8  # two-sided test at 5%, detected 80% of the time


def t_quantile(p, df):
    """The x with P(T <= x) = p for Student's t with `df` degrees of freedom."""
    return float(stats.t.ppf(p, df))


def detectable(se, df, alpha, power=POWER):
    """The smallest true difference a two-sided test at `alpha` detects with probability `power`:
    (t_{1-alpha/2} + t_{power}) x the standard error."""
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se


@contextlib.contextmanager
def equal_values_allowed():
    """SciPy without its warning for samples of equal values: a seed group (or a paired difference) without spread
    is data here, not a loss of precision."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        yield


def excludes_zero(low, high):
    """Whether the interval [low, high] lies wholly on one side of 0 (never for an undefined, NaN interval)."""
    return bool(low > 0 or high < 0)


def welch(a, b, alpha=ALPHA, power=POWER):
    """Mean of a minus mean of b, its (1 - alpha) Welch interval (SciPy's ttest_ind, equal_var=False), and the
    smallest true difference samples of these sizes and spreads would detect with probability `power`."""
    with equal_values_allowed():
        test = stats.ttest_ind(a, b, equal_var=False)
    low, high = test.confidence_interval(1 - alpha)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se, diff = math.sqrt(va + vb), statistics.mean(a) - statistics.mean(b)
    return {"difference": diff, "low": float(low), "high": float(high), "df": float(test.df), "se": se,
            "separated": excludes_zero(low, high), "detectable": detectable(se, float(test.df), alpha, power)}


def paired(a, b, family=1, alpha=ALPHA, power=POWER):
    """Mean of the per-seed differences a[i] - b[i] (seed i's two runs on one machine), its t interval (SciPy's
    ttest_rel) at 1 - alpha / family (Bonferroni over the row's `family` of comparisons), whether that interval
    excludes 0 ("separated"), and the smallest true difference these seeds would detect at that level."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired interval needs two equal lists of at least 2 seeds, not {len(a)} and {len(b)}")
    level = alpha / family
    with equal_values_allowed():
        test = stats.ttest_rel(a, b)
    low, high = test.confidence_interval(1 - level)
    differences = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(differences) / math.sqrt(len(a))
    return {"difference": statistics.mean(differences), "low": float(low), "high": float(high), "seeds": len(a),
            "family": family, "se": se, "separated": excludes_zero(low, high),
            "detectable": detectable(se, len(a) - 1, level, power)}
