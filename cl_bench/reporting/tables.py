"""What a leaderboard is: per stream (and order of its new tasks) a table of rows and columns, the files left
out, and the order effects between a stream's tables.

Plain data, built by leaderboard.build from the runs of collect.py; formats.py, readme.py and figures.py
write and draw it. Every number in it is computed in cl_bench.analysis.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cl_bench.analysis import stats
from cl_bench.reporting.collect import Run


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    higher_is_better: bool | None  # None: not a quality (e.g. seeds)
    kind: str = "score"  # score | percent | count | seconds | step | int | ratio | flops | bytes | text


@dataclass
class Row:
    label: str
    strategy: str
    runs: list[Run]
    # key -> (mean, half the interval's width); the interval itself is in `ci`, and need not be symmetric
    values: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (low, high), stats.bootstrap_ci
    # key -> {seed: value}: every column's and every scalar metric's per-run values (tiers, `clbench compare`)
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)  # key -> the cell of a "text" column
    matrix: list[list[float]] = field(default_factory=list)  # the mean accuracy matrix over runs, R[stage][task]


@dataclass
class Table:
    stream: str
    tasks: list[dict]
    columns: list[Column]
    rows: list[Row]
    order: tuple[str, ...] = ()  # the new tasks' order of these runs
    default_order: bool = True  # the stream's own order (else runs with --order)

    @property
    def title(self) -> str:
        return self.stream if self.default_order else f"{self.stream}, order {' > '.join(self.order)}"

    @property
    def slug(self) -> str:
        """The table's name in file paths (figures/<slug>/)."""
        return self.stream if self.default_order else f"{self.stream}--{'-'.join(self.order)}"


@dataclass
class Leaderboard:
    tables: list[Table]
    skipped: list[tuple[Path, str]]  # (file, why it was left out)


@dataclass
class OrderEffect:
    """One strategy on one stream over several orders of its new tasks: final ACC per order, and a test."""

    stream: str
    label: str
    orders: list[tuple[str, ...]]
    acc: list[float]  # mean final ACC over seeds, per order
    seeds: list[int]  # seeds every order has (the test pairs by seed)
    test: str  # "paired t" (2 orders), "Friedman" (3 or more), or "" when too few shared seeds
    p_value: float

    @property
    def spread(self) -> float:
        return max(self.acc) - min(self.acc)


def order_effects(board: Leaderboard) -> list[OrderEffect]:
    """For every strategy run in two or more orders of a stream: does the order change its final ACC?

    The test (stats.order_effect_test) pairs runs by seed, over the seeds that every order has.
    """
    by_stream: dict[str, list[Table]] = defaultdict(list)
    for t in board.tables:
        by_stream[t.stream].append(t)
    out = []
    for name, tables in by_stream.items():
        if len(tables) < 2:
            continue
        labels = sorted({r.label for t in tables for r in t.rows})
        for label in labels:
            rows = [(t.order, r) for t in tables for r in t.rows if r.label == label]
            if len(rows) < 2:
                continue
            shared = sorted(set.intersection(*(set(r.per_seed["acc"]) for _, r in rows)))
            test, p = stats.order_effect_test([[r.per_seed["acc"][s] for s in shared] for _, r in rows])
            out.append(OrderEffect(name, label, [o for o, _ in rows], [r.values["acc"][0] for _, r in rows],
                                   shared, test, p))
    return out
