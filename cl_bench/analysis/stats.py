"""Statistics over seeds: intervals, paired comparisons and multiple testing (letter groups: grouping.py).

Pure functions over per-seed (and per-item) values, numpy/torch in, plain numbers out;
no file I/O. The leaderboard and `clbench compare` call them; everything is seeded, so a
published number recomputes exactly.

Why these choices (tests/test_stats.py checks each against scipy or a hand computation):
- Intervals of a mean over seeds: expanded percentile bootstrap (scipy.stats.bootstrap,
  method="percentile", at Hesterberg's widened level). A percentile interval of a mean lies
  inside [min, max] of the data, so inside the metric's range by construction; BCa does not
  promise that and is undefined for identical values. The widening corrects the plain
  percentile interval's narrowness at small n (it is about mean ± z·s·sqrt((n-1)/n) instead
  of mean ± t·s). It cannot fix the small-n ceiling: an interval inside the data's range
  covers a symmetric distribution's mean with probability at most 1 - 2^(1-n) (75% at 3
  seeds, 93.8% at 5), so with fewer than 6 seeds a "95%" interval is below its nominal level.
  Compare strategies with paired tests (below), not by overlapping intervals.
- Comparisons are paired by seed (same seed = same base model, projector init and data
  order), which removes the seed-to-seed spread both strategies share.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

N_RESAMPLES = 10_000
SEED = 0  # the bootstrap's fixed seed: published intervals recompute exactly


def _array(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _rng_kw(seed: int) -> dict:
    # scipy >= 1.15 takes `rng`; older versions only `random_state`
    name = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def expanded_level(level: float, n: int) -> float:
    """The confidence level at which a percentile bootstrap of a mean of n values is about as wide as
    the Student-t interval at `level`: z' = sqrt(n/(n-1)) t_{n-1} (Hesterberg, "What teachers should know
    about the bootstrap", arXiv:1411.5279, the expanded percentile interval; R package resample, ExpandProbs)."""
    if n < 2:
        return float("nan")
    t = sps.t.ppf(0.5 + level / 2, n - 1)
    return float(1 - 2 * sps.norm.sf(math.sqrt(n / (n - 1)) * t))


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # NaN when fewer than 2 values
    high: float
    n: int  # values used (NaN dropped)


def bootstrap_ci(values, level: float = 0.95, *, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                 expand: bool = True) -> Interval:
    """Mean of `values` (one per seed) and a bootstrap confidence interval of it, inside [min, max].

    Args:
        values: one number per seed (list, numpy or torch); NaN values are dropped.
        level: nominal confidence level.
        n_resamples, seed: of scipy.stats.bootstrap (fixed seed: the same numbers every time).
        expand: widen the percentile level as Hesterberg does for small n (see expanded_level).

    Returns:
        Interval(mean, low, high, n): mean NaN for n = 0, low/high NaN for n < 2, low = high = the value
        when all values are equal.
    """
    x = _array(values)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    lo_x, hi_x = float(x.min()), float(x.max())
    if lo_x == hi_x:  # every resample is the same: a point, not a warning from scipy
        return Interval(lo_x, lo_x, lo_x, n)
    # Percentile, not BCa: a percentile interval of a mean is a pair of quantiles of resampled means,
    # so it stays inside [min, max] of the data (and of the metric); BCa's adjusted quantiles need a
    # jackknife that degenerates for 2-5 seeds with repeated values, and it under-covers at small n too.
    conf = expanded_level(level, n) if expand else level
    res = sps.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=conf, method="percentile",
                        vectorized=True, **_rng_kw(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    # The resampled means are inside [min, max] up to rounding of the mean; clip that rounding away.
    return Interval(mean, min(max(low, lo_x), hi_x), min(max(high, lo_x), hi_x), n)


def column_intervals(values, level: float = 0.95, lower: float = -math.inf,
                     upper: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its bootstrap_ci, column by column, clipped to [lower, upper] as well.

    Args:
        values: [seeds] or [seeds, k] (e.g. one task's accuracy after every stage, per seed).
        level: nominal confidence level, as in bootstrap_ci.
        lower, upper: the metric's range (bootstrap_ci's intervals lie inside the seeds' range already).

    Returns:
        (mean, low, high), each [k] (0-d for a flat input); low/high NaN where a column has fewer than 2 values.
    """
    x = np.asarray(values, dtype=np.float64)
    flat = x.ndim == 1
    x = x.reshape(x.shape[0], -1)
    cis = [bootstrap_ci(x[:, j], level) for j in range(x.shape[1])]
    mean = np.array([c.mean for c in cis])
    lo = np.clip([c.low for c in cis], lower, upper)
    hi = np.clip([c.high for c in cis], lower, upper)
    return (mean[0], lo[0], hi[0]) if flat else (mean, lo, hi)


def mean_over_seeds(values) -> np.ndarray:
    """The mean over seeds of per-seed arrays [seeds, ...] (e.g. accuracy matrices), NaN ignored; shape [...]."""
    x = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell NaN in every seed stays NaN, silently
        return np.nanmean(x, axis=0)


def two_level_bootstrap_ci(accuracy, n_items, level: float = 0.95, *, n_resamples: int = N_RESAMPLES,
                           seed: int = SEED, expand: bool = True) -> Interval:
    """Interval of a mean over seeds of a mean over tasks of accuracy, resampling seeds, then each test set.

    The second level adds the test sets' sampling error (a 48-item task's accuracy has a binomial SE of
    about 0.07) to the seed-to-seed spread. Resampling m items of which k are correct, with replacement,
    gives Binomial(m, k/m) correct items, so the per-task accuracies (e.g. the last row of the accuracy
    matrix, or cl_bench.results.unpack_items(...).mean()) and the test sizes are all it needs.

    Args:
        accuracy: [seeds, tasks] accuracies in [0, 1]; a seed with a NaN is dropped.
        n_items: [tasks] test items per task (the stream's n_test).
        level, n_resamples, seed, expand: as in bootstrap_ci (the widening uses the number of seeds).

    Returns:
        Interval of the mean over seeds of mean_j accuracy[:, j], inside [0, 1].
    """
    if hasattr(accuracy, "detach"):
        accuracy = accuracy.detach().cpu().numpy()
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 2:
        raise ValueError(f"accuracy must be [seeds, tasks], got shape {acc.shape}")
    acc = acc[~np.isnan(acc).any(axis=1)]
    m = np.asarray(n_items, dtype=np.int64)
    n = len(acc)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(acc.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n, size=(n_resamples, n))  # [B, n] resampled seeds
    correct = np.rint(acc * m).astype(np.int64)  # [n, tasks] items answered correctly
    k = rng.binomial(m, correct[seeds] / m)  # [B, n, tasks] correct items of a resampled test set
    boot = (k / m).mean(axis=(1, 2))  # [B]
    conf = expanded_level(level, n) if expand else level
    low, high = np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2])
    return Interval(mean, float(low), float(high), n)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A and B over shared seeds; diff = A - B."""
    n: int  # shared seeds with both values defined
    mean_a: float
    mean_b: float
    mean_diff: float
    low: float  # t-interval of the mean difference (NaN for n < 2)
    high: float
    p_value: float  # two-sided paired t-test (NaN for n < 2)
    p_a_better: float  # share of seeds where A > B, ties counting half
    effect_size: float  # Cohen's d_z = mean diff / sd of the diffs (inf when the diffs are equal and nonzero)
    seeds_95: float | None  # seeds needed to detect `effect_size` at 95% power (inf when it is 0)
    seeds_80: float | None  # ... at 80% power


def paired_comparison(a, b, level: float = 0.95, alpha: float = 0.05) -> Paired:
    """Paired statistics of A - B over shared seeds (a[i] and b[i] from the same seed).

    The interval is the paired Student-t interval (scipy's ttest_rel(...).confidence_interval), not a
    bootstrap: it is the interval of the test whose p-value is reported, so "interval excludes 0" and
    "p < 1 - level" always agree, and at 3-5 pairs a percentile bootstrap of differences is too narrow.
    The test is the paired t-test, not Wilcoxon's signed-rank test: with 5 pairs the smallest two-sided
    p Wilcoxon can give is 2/2^5 = 0.0625, so it could never reject at 0.05.

    P(A > B) is the share of seeds on which A beats B (ties count half). rliable's
    probability_of_improvement is the Mann-Whitney statistic over all runs of A against all runs of B,
    P(X_A > X_B) for runs drawn independently; it ignores that runs with the same seed share the base
    model, the projector init and the data order, so a seed that is hard for both counts against the
    better strategy. With shared seeds the paired share answers the question asked: on a new seed,
    how often does A beat B? (It is also what scipy gives without a new dependency.)

    Seeds needed: the smallest n at which a two-sided paired t-test at `alpha` rejects with the given
    power if the true effect were the observed d_z (noncentral t, scipy.stats.nct); an estimate from a
    few seeds, so a rough guide, not a guarantee.
    """
    x, y = _array(a), _array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same seeds: {len(x)} values of A against {len(y)} of B")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = len(x)
    nan = float("nan")
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan, nan, nan, None, None)
    d = x - y
    mean_diff = float(d.mean())
    tie = np.abs(d) <= 1e-12 * np.maximum(1.0, np.abs(x))  # equal up to rounding
    p_better = float(((d > 0) & ~tie).sum() + 0.5 * tie.sum()) / n
    base = dict(n=n, mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=mean_diff, p_a_better=p_better)
    if n < 2:
        return Paired(**base, low=nan, high=nan, p_value=nan, effect_size=nan, seeds_95=None, seeds_80=None)
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        # zero spread, up to rounding (0.7 - 0.6 != 0.6 - 0.5): scipy's t is 0/0 or huge; say what it means
        zero = abs(mean_diff) <= 1e-12 * max(1.0, float(np.abs(x).max()))
        eff = 0.0 if zero else math.copysign(math.inf, mean_diff)
        p = 1.0 if zero else 0.0
        low = high = 0.0 if zero else mean_diff
    else:
        res = sps.ttest_rel(x, y)
        p = float(res.pvalue)
        ci = res.confidence_interval(confidence_level=level)
        low, high = float(ci.low), float(ci.high)
        eff = mean_diff / float(d.std(ddof=1))
    return Paired(**base, low=low, high=high, p_value=p, effect_size=eff,
                  seeds_95=seeds_needed(eff, 0.95, alpha), seeds_80=seeds_needed(eff, 0.80, alpha))


def paired_t_power(effect_size: float, n: float, alpha: float = 0.05) -> float:
    """Power of a two-sided paired (one-sample) t-test with n pairs at effect size d_z (n may be fractional)."""
    df = n - 1
    crit = sps.t.isf(alpha / 2, df)
    nc = effect_size * math.sqrt(n)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_needed(effect_size: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 10**7) -> float | None:
    """Smallest number of paired seeds (>= 2) at which paired_t_power reaches `power`.

    None when the effect size is undefined (NaN), inf when it is 0 (no number of seeds detects no effect)
    or when more than max_n would be needed.
    """
    if effect_size is None or math.isnan(effect_size):
        return None
    d = abs(effect_size)
    if d == 0:
        return math.inf
    if math.isinf(d):
        return 2
    hi = 2
    while paired_t_power(d, hi, alpha) < power:  # power grows with n: double, then bisect
        if hi > max_n:
            return math.inf
        hi *= 2
    lo = hi // 2 if hi > 2 else 1  # power(lo) < power, or lo = 1 (no test with one pair)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 2 and paired_t_power(d, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (NaN stays NaN and is not counted).

    Hand-written: scipy has no Holm correction (scipy.stats.false_discovery_control is Benjamini-
    Hochberg / -Yekutieli, which controls the false discovery rate, not the family-wise error).
    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{k<=i} min(1, (m - k + 1) p_(k)).
    """
    p = _array(pvalues)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def order_effect_test(per_order: Sequence[Sequence[float]]) -> tuple[str, float]:
    """Does the order of a stream's new tasks change a strategy's score? A test over seeds run in every order.

    Args:
        per_order: per order, one value per shared seed (the same seeds, in the same sequence, in every order).

    Returns:
        (test, p): ("paired t", p) for 2 orders and at least 2 seeds (runs with the same seed share the base
        model and projector initialisation, so they pair), ("Friedman", p) for 3 or more orders and at least
        3 seeds (scipy.stats.friedmanchisquare), else ("", NaN): too few seeds to test.
    """
    seeds = min((len(v) for v in per_order), default=0)
    if len(per_order) == 2 and seeds >= 2:
        return "paired t", paired_comparison(per_order[0], per_order[1]).p_value
    if len(per_order) >= 3 and seeds >= 3:
        return "Friedman", float(sps.friedmanchisquare(*per_order).pvalue)
    return "", float("nan")
