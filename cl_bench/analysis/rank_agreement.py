"""Do two model sizes rank the strategies alike? Kendall's tau between the rankings by mean ACC, with an interval.

Pure functions over per-seed values (numpy and scipy, no torch); reporting's Scale table calls them.

- tau is scipy.stats.kendalltau (tau-b: a tie at either size counts as neither agreement nor disagreement) between
  the strategies' mean ACC at size A and at size B, over the strategies run at both.
- Its interval is a percentile bootstrap over seeds: each resample draws, for every strategy at every size, as many
  of its per-seed values as it has, with replacement, and recomputes both rankings and their tau. Strategies are
  resampled independently, not by shared seed: runs of one size share a base per seed, and resampling seeds jointly
  would need every strategy at every seed; independent draws leave that shared part in the spread, so the interval
  is, if anything, wide. tau is not a mean, so the level is not widened as stats.bootstrap_ci's is.
- A pair flips when one size ranks it strictly one way and the other strictly the other way (ties flip nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import stats as sps

from cl_bench.analysis.stats import SEED

N_RESAMPLES = 2_000


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau between two rankings of the same strategies, its bootstrap interval and the pairs that flip."""

    tau: float  # NaN with fewer than 2 strategies, or when every strategy ties at one size
    low: float  # percentile interval over seed resamples, inside [-1, 1]; NaN where tau is
    high: float
    strategies: tuple[str, ...]  # ranked at both sizes, in the order given
    # (x, y): x ranks above y at size A and below it at size B; x before y as A ranks them
    flips: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    n_resamples: int = N_RESAMPLES


def _means(values: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    """Mean per strategy over its seeds, NaN ignored: [strategies]."""
    out = []
    for n in names:
        x = np.asarray(values[n], dtype=np.float64).reshape(-1)
        x = x[~np.isnan(x)]
        out.append(x.mean() if len(x) else np.nan)
    return np.array(out)


def tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of x [B, k] against the same row of y [B, k]: [B], NaN where a row ties
    throughout (scipy.stats.kendalltau row by row, vectorised for the bootstrap; tests check they agree)."""
    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])  # [B, pairs]
    # (concordant - discordant) / sqrt((pairs - ties in x) (pairs - ties in y))
    denom = np.sqrt((sx != 0).sum(1) * (sy != 0).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (sx * sy).sum(1) / np.where(denom > 0, denom, 1), np.nan)


def flipped_pairs(mean_a: Sequence[float], mean_b: Sequence[float], names: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs that one size ranks strictly one way and the other strictly the other way, each as
    (above at A, below at A), in A's order."""
    order = sorted(range(len(names)), key=lambda i: (-mean_a[i], names[i]))  # A's ranking, ties by name
    out = []
    for p, q in combinations(order, 2):  # p ranks at least as high as q at A
        if mean_a[p] > mean_a[q] and mean_b[p] < mean_b[q]:
            out.append((names[p], names[q]))
    return out


def rank_agreement(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], level: float = 0.95, *,
                   n_resamples: int = N_RESAMPLES, seed: int = SEED) -> RankAgreement:
    """Kendall's tau between the strategies' rankings by mean at size A and at size B, with a bootstrap interval.

    Args:
        a, b: strategy -> its per-seed values (e.g. final ACC) at size A and at size B; strategies missing at
            either size, or with no defined value there, are left out.
        level: of the percentile interval.
        n_resamples, seed: of the bootstrap (fixed seed: the same interval every time).

    Returns:
        RankAgreement: tau (scipy.stats.kendalltau), its interval clipped to [-1, 1], the strategies ranked and the
        pairs whose order flips.
    """
    names = [n for n in a if n in b]
    ma, mb = _means(a, names), _means(b, names)
    ok = ~(np.isnan(ma) | np.isnan(mb))
    names = [n for n, keep in zip(names, ok) if keep]
    ma, mb = ma[ok], mb[ok]
    nan = float("nan")
    if len(names) < 2:
        return RankAgreement(nan, nan, nan, tuple(names), (), n_resamples)
    tau = float(sps.kendalltau(ma, mb).statistic)
    flips = tuple(flipped_pairs(ma.tolist(), mb.tolist(), names))
    if math.isnan(tau):
        return RankAgreement(nan, nan, nan, tuple(names), flips, n_resamples)
    rng = np.random.default_rng(seed)
    boot = [np.empty((n_resamples, len(names))) for _ in range(2)]  # [B, strategies] resampled means per size
    for side, values in zip(boot, (a, b)):
        for k, n in enumerate(names):
            x = np.asarray(values[n], dtype=np.float64).reshape(-1)
            x = x[~np.isnan(x)]
            side[:, k] = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(1)
    taus = tau_b(*boot)
    taus = taus[~np.isnan(taus)]  # a resample tied throughout ranks nothing
    if len(taus) == 0:
        return RankAgreement(tau, nan, nan, tuple(names), flips, n_resamples)
    low, high = np.clip(np.quantile(taus, [(1 - level) / 2, (1 + level) / 2]), -1.0, 1.0)
    return RankAgreement(tau, float(low), float(high), tuple(names), flips, n_resamples)
