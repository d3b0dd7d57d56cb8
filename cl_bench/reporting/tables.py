"""What a leaderboard is: per stream, order of its new tasks and stage budget a table of rows and columns, the files
left out, the order effects between a stream's tables, the budget curves across them and the scale tables (a table's
strategies at each model size).

Plain data, built by leaderboard.build from the runs of collect.py; formats.py, readme.py and figures.py
write and draw it. Every number in it is computed in cl_bench.analysis.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cl_bench.analysis import stats
from cl_bench.analysis.curves import Curve, Point
from cl_bench.analysis.grouping import Grouping
from cl_bench.analysis.rank_agreement import RankAgreement
from cl_bench.config import Budget
from cl_bench.errors import ClbenchError, UsageError
from cl_bench.reporting.collect import Run
from cl_bench.run.config import RunConfig

DEFAULT_EXAMPLES = Budget().examples  # the default stage budget, examples per stage (400 steps x 32)
DEFAULT_STREAM = RunConfig.stream  # the default stream: its tables come first


def slug(text: str) -> str:
    """`text` as a file name or an HTML id: what is not a letter, digit, '.', '+' or '-' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


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
    # key -> {seed: value}: every column's and every scalar metric's per-run values (groups, `clbench compare`)
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
    groups: Grouping | None = None  # the rows' letter groups on ACC, by row label (leaderboard._set_groups)
    # The stage budget of every run in the table (a table never mixes budgets): examples per stage, as given
    # ("200 steps x 32", or "6,400 examples" when its runs reach it by several step counts and batch sizes), and
    # whether it is the stream's main budget (the default's where it has runs, else the one most runs have).
    examples: int = DEFAULT_EXAMPLES
    budget: str = ""
    main_budget: bool = True

    @property
    def stream_title(self) -> str:
        """The stream and order, whatever the budget."""
        return self.stream if self.default_order else f"{self.stream}, order {' > '.join(self.order)}"

    @property
    def stream_slug(self) -> str:
        return self.stream if self.default_order else f"{self.stream}--{'-'.join(self.order)}"

    @property
    def title(self) -> str:
        """"vision-audio", or with a budget other than the default "vision-audio, 0.5x budget (200 steps x 32)"."""
        if self.examples == DEFAULT_EXAMPLES:
            return self.stream_title
        return f"{self.stream_title}, {budget_ratio(self.examples)} budget ({self.budget or self.examples})"

    @property
    def slug(self) -> str:
        """The table's name in file paths (figures/<slug>/): the stream's for its main table (the default budget's,
        or the budget most of its runs have), with the budget for the others."""
        return self.stream_slug + ("" if self.main_budget else f"--budget-{self.examples}")


class AmbiguousRow(UsageError):
    """A strategy named by its name has several rows and none (or several) at its defaults: `why`, then the fix."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(f"{why}; {fix}")
        self.why = why


def find_row(table: Table, name: str) -> Row:
    """The row labelled `name`; else the only row of strategy `name`; else, of its several rows (variants run with
    --set beside its recipe), the one at the strategy's options today (its defaults). UsageError naming the choices
    otherwise (AmbiguousRow where the strategy has rows but none is the one)."""
    for r in table.rows:
        if r.label == name:
            return r
    rows = [r for r in table.rows if r.strategy == name]
    if len(rows) == 1:
        return rows[0]
    if rows:
        defaults = default_options(name)
        at = [r for r in rows if defaults is not None and options_of(r) == defaults]
        if len(at) == 1:
            return at[0]
        labels = ", ".join(repr(r.label) for r in rows)
        said = "its defaults are not known here" if defaults is None else f"{len(at) or 'none'} at its defaults"
        raise AmbiguousRow(f"strategy {name!r} has {len(rows)} rows with different options on stream "
                           f"{table.stream!r} ({said}): {labels}", "pass one of these labels instead")
    known = ", ".join(sorted({r.label for r in table.rows}))
    raise UsageError(f"no finished runs of {name!r} on stream {table.stream!r} (there: {known}); "
                     f"run `clbench run --stream {table.stream} --strategy {name}` first")


def options_of(row: Row) -> str:
    """A row's strategy options as its runs recorded them (config.strategy_options), as canonical JSON."""
    return json.dumps(row.runs[0].config.get("strategy_options", {}), sort_keys=True)


def default_options(strategy: str) -> str | None:
    """The options a run of `strategy` records when none is set (asdict of its Config today), as canonical JSON;
    None when no installed strategy has that name or its Config takes no defaults."""
    import dataclasses

    from cl_bench.api.strategy import strategy_class

    try:
        config = strategy_class(strategy).Config()
    except (ClbenchError, TypeError):
        return None
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def budget_ratio(examples: int) -> str:
    """A stage budget against the default: "0.5x"."""
    return f"{examples / DEFAULT_EXAMPLES:.3g}x"


@dataclass
class RecipePair:
    """Two rows whose recipes spend a stage alike (leaderboard.RECIPE_PAIRS), at equal examples seen per stage."""

    examples: float  # seen per stage, all phases
    a: tuple[str, Point]  # (row label, its point)
    b: tuple[str, Point]


@dataclass
class BudgetCurves:
    """A stream's (and order's) strategies across the budgets of its tables (analysis.curves)."""

    stream: str
    title: str  # the stream and order (Table.stream_title)
    slug: str  # where its figure goes (Table.stream_slug)
    budgets: list[tuple[int, str]]  # (examples per stage, as given), ascending
    curves: list[Curve]  # strategies with two or more budgets, by label (may be none where `pairs` has some)
    target: float | None  # the matched new-task accuracy (curves.matched_target)
    matched: dict[str, float | None]  # label -> text retention at `target` (curves.retention_at)
    retention_name: str = "text"  # the retained task (the stream's first)
    pairs: list[RecipePair] = field(default_factory=list)


@dataclass
class ScaleRow:
    """One strategy (and options) at each model size of a table: ACC as the table has it, per size."""

    label: str
    acc: dict[str, tuple[float, float, float]]  # model -> (mean, low, high) over seeds; sizes it did not run absent
    seeds: dict[str, int]  # model -> seeds


@dataclass
class ScaleTable:
    """A table's strategies at two or more model sizes (config.model), and how alike each pair of sizes ranks them
    (analysis.rank_agreement): does a ranking found on a small base hold on a larger one?"""

    title: str  # the table's (Table.title)
    slug: str  # the table's (Table.slug): the scale section follows it
    models: list[str]  # smallest first, by the base's recorded parameters (then by name)
    parameters: dict[str, int | None]  # model -> the base LM's parameters, as its runs record them
    rows: list[ScaleRow]
    agreement: list[tuple[str, str, RankAgreement]]  # (smaller, larger, their agreement) per pair of sizes


@dataclass
class Leaderboard:
    tables: list[Table]
    skipped: list[tuple[Path, str]]  # (file, why it was left out)
    curves: list[BudgetCurves] = field(default_factory=list)  # streams with budget curves or recipe pairs
    scale: list[ScaleTable] = field(default_factory=list)  # tables with runs at more than one model size


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
    by_stream: dict[tuple[str, int], list[Table]] = defaultdict(list)
    for t in board.tables:  # orders compared at one budget only
        by_stream[t.stream, t.examples].append(t)
    out = []
    for (name, examples), tables in by_stream.items():
        if len(tables) < 2:
            continue
        if examples != DEFAULT_EXAMPLES:
            name = f"{name}, {budget_ratio(examples)} budget"
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
