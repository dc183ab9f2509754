"""How far the seeds carry a comparison: Welch's t interval for a difference of means, and the smallest
difference a number of seeds could detect. Pure Python (no SciPy): Student's t from its density.
"""
import math
import statistics

ALPHA, POWER = 0.05, 0.8  # two-sided test at 5%, detected 80% of the time


def t_cdf(x, df, steps=2000):
    """P(T <= x) for Student's t with `df` degrees of freedom (Simpson's rule on the density; |error| < 1e-9)."""
    if x < 0:
        return 1.0 - t_cdf(-x, df, steps)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t):
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    h = x / steps
    inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return 0.5 + h / 3 * (density(0.0) + inner + density(x))


def t_quantile(p, df):
    """The x with t_cdf(x, df) = p, for 0.5 <= p < 1 (bisection)."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def welch(a, b, alpha=ALPHA, power=POWER):
    """Mean of a minus mean of b, its (1 - alpha) Welch interval, and the smallest true difference that
    samples of these sizes and spreads would detect (two-sided at `alpha`) with probability `power`:
    (t_{1-alpha/2} + t_{power}) x the standard error, with Welch's degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff, t = statistics.mean(a) - statistics.mean(b), t_quantile(1 - alpha / 2, df)
    return {"difference": diff, "low": diff - t * se, "high": diff + t * se, "df": df, "se": se,
            "separated": not diff - t * se <= 0 <= diff + t * se,
            "detectable": (t + t_quantile(power, df)) * se}
