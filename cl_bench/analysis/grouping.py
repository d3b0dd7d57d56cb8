"""Which strategies stand together: a compact letter display of statistically tied strategies, and the Pareto
front of score against cost.

Pure functions over per-seed values and points; the leaderboard's Group column and the Pareto plots draw them.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from cl_bench.analysis.stats import holm, paired_comparison

LETTERS = string.ascii_lowercase + string.ascii_uppercase  # the letters of the groups, in order


@dataclass(frozen=True)
class Grouping:
    order: list[str]  # names, best first (no defined mean: last)
    letters: dict[str, str]  # name -> its letters ("ab"); "" when its mean is undefined
    # Holm-adjusted p of each pair of names with a defined mean, in both orders; NaN: untested (< 2 shared seeds)
    adjusted: dict[tuple[str, str], float]
    alpha: float

    @property
    def pairs(self) -> int:
        """How many pairs were tested: the size of the Holm family."""
        return sum(not math.isnan(p) for p in self.adjusted.values()) // 2

    def differ(self, a: str, b: str) -> bool:
        """Whether a and b differ significantly (an untested pair does not)."""
        return self.adjusted.get((a, b), math.nan) < self.alpha  # NaN < alpha: False

    def rule(self, metric: str = "ACC") -> str:
        """The sentence under a table that says what a shared letter means."""
        n, untested = self.pairs, len(self.adjusted) // 2 - self.pairs
        family = (f"all {_count(n, 'pair')}, p < {self.alpha:g}" if not untested else
                  f"the {_count(n, 'pair')} with 2 or more shared seeds, p < {self.alpha:g}; the other "
                  f"{_count(untested, 'pair')}, untested, count as not different")
        return (f"Group (letters in order of mean {metric}, 'a' for the best): strategies sharing a letter are not "
                f"significantly different in {metric} (paired t-test over shared seeds, Holm-adjusted over {family}); "
                "strategies with no letter in common differ.")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def letter_groups(names: Sequence[str], per_seed_values: Sequence[Mapping[int, float]], higher_is_better: bool = True,
                  alpha: float = 0.05) -> Grouping:
    """Rank strategies by mean and give each the letters of the groups of strategies it is tied with.

    Rule (deterministic, independent of the input's order): rank by mean over seeds, best first (ties by
    name). Test every pair of strategies with a defined mean by a paired t-test over the seeds both have
    (values NaN in either dropped; a pair with fewer than 2 such seeds is untested and counts as tied), and
    Holm-adjust the p-values over all tested pairs. A pair differs when its adjusted p is < alpha. The
    letters are compact_letter_display's: two strategies share a letter if and only if they do not differ.
    A strategy with no defined mean is in no test and gets no letter.

    Args:
        names: one per strategy (unique).
        per_seed_values: one mapping seed -> value per strategy.
        higher_is_better: the direction of the metric.
        alpha: family-wise error rate.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"letter groups need unique names, got {list(names)}")
    # Sorted by seed, so that neither the means (float sums) nor the pairs depend on the input's order.
    by_name = {nm: dict(sorted((s, float(v)) for s, v in d.items())) for nm, d in zip(names, per_seed_values)}
    means = {nm: _mean(d.values()) for nm, d in by_name.items()}
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(names, key=lambda nm: (math.isnan(means[nm]), 0.0 if math.isnan(means[nm]) else sign * means[nm],
                                          nm))
    ranked = [nm for nm in order if not math.isnan(means[nm])]
    pairs = list(combinations(ranked, 2))
    raw = []
    for u, w in pairs:
        shared = sorted(set(by_name[u]) & set(by_name[w]))
        raw.append(paired_comparison([by_name[u][s] for s in shared], [by_name[w][s] for s in shared]).p_value)
    adjusted = {}
    for (u, w), p in zip(pairs, holm(raw)):
        adjusted[(u, w)] = adjusted[(w, u)] = p
    differ = [(u, w) for u, w in pairs if adjusted[(u, w)] < alpha]  # NaN (untested): not significant
    letters = compact_letter_display(ranked, differ)
    return Grouping(order, {nm: letters.get(nm, "") for nm in order}, adjusted, alpha)


def _mean(values: Iterable[float]) -> float:
    x = np.array(list(values), dtype=np.float64)
    return float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else math.nan


def compact_letter_display(ranked: Sequence[str], differ: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Letters such that two names share one if and only if their pair is not in `differ`.

    Piepho's insert-and-absorb algorithm (H.-P. Piepho, "An algorithm for a letter-based representation of
    all-pairwise comparisons", J. Comput. Graph. Stat. 13(2), 2004). Start with one letter held by every
    name; for each differing pair (i, j), split every letter held by both into a copy without i and a copy
    without j, then drop any letter whose holders are a subset of another's (absorb). A split keeps every
    other pair together, so at the end the letters are exactly the maximal sets of mutually non-differing
    names: unique, whatever the order of `differ`. Piepho's optional sweep (dropping letters made redundant
    by others) is left out: its result depends on the order it sweeps in.

    Args:
        ranked: names, best first; 'a' goes to the letter held by the best name, the next letters in
            ranking order (letters ordered by their holders' ranks, compared best first).
        differ: pairs of names that differ significantly (either order).

    Returns:
        name -> its letters in alphabetical order (a-z, then A-Z; past 52 letters "a1", "b1", ..., comma-separated).
    """
    # Hand-written: no maintained Python library gives a letter display for arbitrary pairwise p-values (scipy and
    # statsmodels have none; the small PyPI scripts cld4py and compactletterdisplay take pandas frames of a fixed
    # layout and are single-author). R's multcompView::multcompLetters is the reference implementation.
    rank = {nm: i for i, nm in enumerate(ranked)}
    columns = [frozenset(range(len(ranked)))] if ranked else []  # each letter: the ranks of its holders
    for i, j in sorted({tuple(sorted((rank[u], rank[w]))) for u, w in differ if u != w}):  # as ranks, sorted
        split = []
        for col in columns:
            if i in col and j in col:
                split += [col - {i}, col - {j}]
            else:
                split.append(col)
        # absorb: a letter whose holders all hold another letter tells nothing
        unique = set(split)
        columns = [c for c in unique if not any(c < other for other in unique)]
    columns.sort(key=lambda c: sorted(c))  # by holders' ranks, best first
    names = list(LETTERS) if len(columns) <= len(LETTERS) else [f"{LETTERS[k % 26]}{k // 26 + 1}"
                                                                   for k in range(len(columns))]
    sep = "" if len(columns) <= len(LETTERS) else ","
    return {nm: sep.join(names[k] for k, col in enumerate(columns) if rank[nm] in col) for nm in ranked}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (cost, score) not beaten by another with lower-or-equal cost and higher-or-equal score, by cost."""
    best, front = float("-inf"), []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front
