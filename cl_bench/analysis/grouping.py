"""Which strategies stand together: tiers of statistically tied strategies, and the Pareto front of score
against cost.

Pure functions over per-seed values and points; the leaderboard's Tier column and the Pareto plots draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from cl_bench.analysis.stats import holm, paired_comparison


@dataclass(frozen=True)
class Tiering:
    order: list[str]  # names, best first
    tier: dict[str, int | None]  # 1 = best; None when a name has no defined mean
    adjusted: dict[tuple[str, str], float]  # Holm-adjusted p of each tested pair (both orders)


TIER_RULE = ("Tier: strategies ranked by mean ACC; walking down the ranking, a strategy starts a new tier when it "
             "is significantly worse than the current tier's first strategy (paired t-test over shared seeds, "
             "Holm-adjusted over all pairs, p < {alpha}); otherwise it shares that tier.")


def tiers(names: Sequence[str], per_seed_values: Sequence[Mapping[int, float]], higher_is_better: bool = True,
          alpha: float = 0.05) -> Tiering:
    """Rank strategies by mean and group them into tiers of statistically tied strategies.

    Rule (deterministic): rank by mean over seeds, best first (ties by name; a NaN mean goes last, tier
    None). Test every pair with a paired t-test over the seeds both have (values NaN in either dropped;
    a pair with fewer than 2 such seeds is untested and counts as tied), and Holm-adjust the p-values over
    all tested pairs. Walk down the ranking: the first strategy leads tier 1; each next strategy joins the
    current tier unless its adjusted p against the tier's leader is < alpha, in which case it leads a new
    tier. "Worse" also needs the leader's mean to be higher on the seeds the two share. So members of a tier
    are tied with its leader (two members may still differ from each other).

    Args:
        names: one per strategy (unique).
        per_seed_values: one mapping seed -> value per strategy.
        higher_is_better: the direction of the metric.
        alpha: family-wise error rate.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"tiers need unique names, got {list(names)}")
    vals = [{int(s): float(v) for s, v in d.items()} for d in per_seed_values]
    means = {nm: (float(np.nanmean(list(d.values()))) if d and not all(math.isnan(v) for v in d.values())
                  else float("nan")) for nm, d in zip(names, vals)}
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(names, key=lambda nm: (math.isnan(means[nm]), sign * means[nm] if not math.isnan(means[nm])
                                          else 0.0, nm))
    by_name = dict(zip(names, vals))
    pairs, raw, better = [], [], {}
    for i, u in enumerate(order):
        for w in order[i + 1:]:
            shared = sorted(set(by_name[u]) & set(by_name[w]))
            res = paired_comparison([by_name[u][s] for s in shared], [by_name[w][s] for s in shared])
            pairs.append((u, w))
            raw.append(res.p_value)
            better[(u, w)] = -sign * res.mean_diff > 0  # u better than w on their shared seeds
    adj = holm(raw)
    adjusted = {}
    for (u, w), p in zip(pairs, adj):
        adjusted[(u, w)] = adjusted[(w, u)] = p
    tier: dict[str, int | None] = {}
    leader, current = None, 0
    for nm in order:
        if math.isnan(means[nm]):
            tier[nm] = None
            continue
        worse = leader is not None and better[(leader, nm)] and adjusted[(leader, nm)] < alpha  # NaN p: False
        if leader is None or worse:
            leader, current = nm, current + 1
        tier[nm] = current
    return Tiering(order, tier, adjusted)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (cost, score) not beaten by another with lower-or-equal cost and higher-or-equal score, by cost."""
    best, front = float("-inf"), []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front
