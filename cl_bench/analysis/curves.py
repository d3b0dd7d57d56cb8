"""Budget curves: one strategy's results across stage budgets, and its forgetting at a matched accuracy.

Pure functions over plain numbers (no torch, no files): the leaderboard (cl_bench.reporting) makes a Point of each
row of each budget's table and draws and prints what these functions return.

Matched-accuracy forgetting. More budget buys a strategy more accuracy on the new tasks and, usually, more forgetting
of text; comparing text retention at equal budgets mixes the two. Here a strategy's text retention is read where its
*new-task accuracy* reaches a common target: the mean over the new tasks of R[j, j], each task's accuracy right
after its own stage (metrics.all_metrics' "mean_plasticity"). The diagonal rather than the last task's R[T, T] alone:
it uses every new task (less noisy, and it does not depend on which modality came last), and it is what a stage's
budget buys before later stages forget it. Final ACC is not used: it contains text retention itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Point:
    """One strategy at one budget: means over its seeds, with the leaderboard's intervals (NaN where undefined)."""

    examples: int  # the stage budget: training examples per stage, steps x batch size
    acc: float  # final average accuracy (ACC)
    acc_low: float
    acc_high: float
    new_acc: float  # new-task accuracy: mean_j R[j, j] over the new tasks (what matching reads)
    retention: float  # text retention, % (100 R[T, 0] / R[0, 0])
    retention_low: float
    retention_high: float
    flops: float = math.nan  # training FLOPs, all stages (NaN: not recorded)
    spent: float = math.nan  # examples actually seen per stage, all phases (NaN: not recorded; then `examples`)

    @property
    def seen(self) -> float:
        """Examples seen per stage: as recorded, else the budget."""
        return self.examples if math.isnan(self.spent) else self.spent


@dataclass(frozen=True)
class Curve:
    """A strategy (the same options apart from the budget) across budgets: its points sorted by budget."""

    label: str
    strategy: str
    points: tuple[Point, ...]

    def at(self, examples: int) -> Point | None:
        return next((p for p in self.points if p.examples == examples), None)


def make_curve(label: str, strategy: str, points: Iterable[Point]) -> Curve:
    """A Curve of `points` sorted by budget; ValueError when two points have the same budget."""
    pts = tuple(sorted(points, key=lambda p: p.examples))
    for a, b in pairwise(pts):
        if a.examples == b.examples:
            raise ValueError(f"curve {label!r}: two points at {a.examples} examples per stage")
    return Curve(label, strategy, pts)


def _usable(curve: Curve) -> list[Point]:
    return [p for p in curve.points if math.isfinite(p.new_acc) and math.isfinite(p.retention)]


def retention_at(curve: Curve, target: float) -> float | None:
    """Text retention where the curve's new-task accuracy reaches `target`, or None where it never does.

    Walking the budgets upwards, the first pair of neighbouring points whose new-task accuracies bracket `target`
    (either end included) is interpolated linearly: retention r_i + w (r_{i+1} - r_i) with
    w = (target - a_i) / (a_{i+1} - a_i). Never extrapolated: a target outside every such pair gives None. Points
    with an undefined new-task accuracy or retention are skipped.

    Args:
        curve: the strategy's points, sorted by budget (make_curve).
        target: a new-task accuracy in [0, 1].
    """
    pts = _usable(curve)
    if len(pts) == 1 and pts[0].new_acc == target:
        return pts[0].retention
    for a, b in pairwise(pts):
        lo, hi = sorted((a.new_acc, b.new_acc))
        if not lo <= target <= hi:
            continue
        if a.new_acc == b.new_acc:  # a flat stretch at the target: the first budget reaching it
            return a.retention
        w = (target - a.new_acc) / (b.new_acc - a.new_acc)
        return a.retention + w * (b.retention - a.retention)
    return None


def matched_target(curves: Sequence[Curve]) -> float | None:
    """The highest new-task accuracy that every curve (of two or more usable points) reaches: the smallest of
    their maxima; None when there is no such curve. A curve whose lowest budget is already above it does not
    bracket it (retention_at gives None there): nothing is extrapolated."""
    tops = [max(p.new_acc for p in pts) for c in curves if len(pts := _usable(c)) >= 2]
    return min(tops) if tops else None
