"""The leaderboard: result files -> one table per stream, mean and 95% interval over seeds, and letter groups.

Nothing is re-run. Every metric is recomputed from the stored accuracy matrices with the
batched torch functions of cl_bench.analysis.metrics (on the device given; all runs of a row in one
call), so a change of definition reaches old results too; intervals and groups come from
cl_bench.analysis.stats and .grouping. A file that cannot be used (unreadable, newer schema, a failed
or incomplete run, a damaged field, a second copy of a run) is reported by name and left out (collect.py).

A table holds one stage budget (examples per stage, config.budget steps x batch size): runs of another budget are
never ranked, grouped or compared with it. A stream's main table is the default budget's (config.Budget) where it
has runs, else the budget most of its runs have; each other budget has a table of its own, titled with it. Across a
stream's budgets the same strategy and options form a budget curve (analysis.curves; Leaderboard.curves).

Here the tables are built; formats.py writes them, readme.py splices their summary into a docs page,
figures.py draws them.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from cl_bench.analysis import grouping, stats
from cl_bench.analysis.curves import Point, make_curve, matched_target, retention_at
from cl_bench.errors import UsageError
from cl_bench.reporting.collect import (Run, budget_examples, budget_text, collect, declared, drop_repeats,
                                        is_default_order, mean_step, model_key, run_order, spent_and_kept,
                                        with_scoring)
from cl_bench.reporting.formats import number as _number, render
from cl_bench.reporting.readme import readme_section
from cl_bench.reporting.scale import scale_tables
from cl_bench.reporting.tables import (DEFAULT_EXAMPLES, DEFAULT_STREAM, BudgetCurves, Column, Leaderboard,
                                      RecipePair, Row, Table, find_row)

# What the command line (cl_bench/cli/) imports from here, besides build, find_row and sort_rows: their homes are
# collect.py, formats.py, readme.py and tables.py.
__all__ = ["build", "columns_for", "find_row", "sort_rows", "collect", "render", "readme_section",
           "_number"]


def build(results_dir: Path, *, stream: str | None = None, sort: str = "acc", device: str = "cpu",
          level: float = 0.95) -> Leaderboard:
    """The leaderboard of every stream under `results_dir` (or only `stream`), rows sorted by `sort`."""
    import torch

    runs, skipped = collect(results_dir)
    # One table per stream, order of its new tasks (files before clbench 0.4 record no order: their own) and budget.
    # A stream's tasks are the set most of its runs have (the first file's on a tie): a run with other tasks is
    # left out, and one odd file can neither push the good runs out nor make a table of its own.
    by_name: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_name[r.doc["stream"]["name"]].append(r)
    by_stream: dict[tuple[str, tuple[str, ...]], list[Run]] = defaultdict(list)
    for name, named in by_name.items():
        sets = [frozenset(t["name"] for t in r.doc["stream"]["tasks"]) for r in named]
        common = max(sets, key=Counter(sets).__getitem__)
        for r, tasks in zip(named, sets):
            if tasks != common:
                skipped.append((r.path, f"its tasks ({', '.join(t['name'] for t in r.doc['stream']['tasks'])}) "
                                        f"differ from the other runs of stream {name!r}"))
                continue
            by_stream[name, run_order(r.doc)].append(r)
    if stream is not None:
        if stream not in {n for n, _ in by_stream}:
            known = ", ".join(sorted({n for n, _ in by_stream})) or "none"
            raise UsageError(f"no finished runs of stream {stream!r} under {results_dir}/runs (streams there: {known})")
        by_stream = {k: v for k, v in by_stream.items() if k[0] == stream}
    dev = torch.device(device)
    tables = []
    # the default stream first, then by name; a stream's own order of its new tasks before other orders
    for name, order in sorted(by_stream, key=lambda k: (k[0] != DEFAULT_STREAM, k[0],
                                                        not is_default_order(by_stream[k][0].doc), k[1])):
        stream_runs = by_stream[name, order]
        # The stream's tasks are those most of its runs have (then the first file's), so that one odd file
        # cannot push the good runs out.
        names = [tuple(t["name"] for t in r.doc["stream"]["tasks"]) for r in stream_runs]
        tasks = stream_runs[names.index(max(names, key=Counter(names).__getitem__))].doc["stream"]["tasks"]
        by_budget: dict[int, list[Run]] = defaultdict(list)
        for r in stream_runs:
            if [t["name"] for t in r.doc["stream"]["tasks"]] != [t["name"] for t in tasks]:
                skipped.append((r.path, f"its tasks differ from the other runs of stream {name!r}"))
                continue
            by_budget[budget_examples(r.doc)].append(r)
        # One table per budget: the main one first (the default's, else the one most runs have), then by size.
        main = DEFAULT_EXAMPLES if DEFAULT_EXAMPLES in by_budget else \
            max(by_budget, key=lambda e: (len(by_budget[e]), e))
        for examples in sorted(by_budget, key=lambda e: (e != main, e)):
            table, repeats = _table(name, order, tasks, by_budget[examples], dev, sort, level, examples == main)
            skipped += repeats
            tables.append(table)
    return Leaderboard(tables, skipped, _budget_curves(tables), scale_tables(tables, _labels, level))


def _table(name: str, order: tuple[str, ...], tasks: list[dict], runs: list[Run], dev, sort: str, level: float,
           main_budget: bool) -> tuple[Table, list[tuple[Path, str]]]:
    """The table of one stream, order and budget (`runs` all have one): a row per group of runs that differ only by
    seed, ranked and letter-grouped among themselves; and the files left out as repeats of another."""
    import torch

    from cl_bench.analysis import metrics

    skipped = []
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[r.group_key()].append(r)
    for key, group in groups.items():  # a run copied into a row is one seed, not two
        groups[key], repeats = drop_repeats(group)
        skipped += repeats
    joint = _joint_reference(groups, dev)
    labels = _labels(groups)
    chance = torch.tensor([t["chance"] for t in tasks], dtype=torch.float64, device=dev)
    # mixed-modality probes every run of the table was scored on (cl_bench.streams.experience.MixedProbe)
    mixed = sorted(set.intersection(*({k.partition("/")[2] for k in r.doc.get("extra_accuracy", {})
                                       if k.startswith("mixed/")} for r in runs)))
    rows = []
    for key, group in groups.items():
        group.sort(key=lambda r: r.unit)
        R = torch.tensor([r.doc["accuracy_matrix"] for r in group], dtype=torch.float64, device=dev)
        per_run = metrics.all_metrics(R, chance=chance, joint_diag=joint.get(model_key(group[0])))
        vals = {k: per_run[k] for k in ("acc", "bwt", "fwt", "forgetting")}
        if joint:
            vals["intransigence"] = per_run["intransigence"]
        ret = per_run["retention"]  # [runs, T+1]: 100 R[T, j] / R[j, j] (text: / R[0, 0])
        for j, t in enumerate(tasks[:-1]):
            vals["retention:" + t["name"]] = ret[:, j]
        vals["new_task_acc"] = per_run["mean_plasticity"]  # mean_j R[j, j] over new tasks: budget curves match on it
        for probe in mixed:  # a mixed-modality probe's accuracy after the last stage (never learned)
            vals["mixed:" + probe] = torch.tensor([r.doc["extra_accuracy"]["mixed/" + probe][-1] for r in group],
                                                  dtype=torch.float64)
        vals["trainable"] = torch.tensor([max(s["cost"]["trainable"] for s in r.doc["stages"]) for r in group],
                                         dtype=torch.float64)
        vals["added"] = torch.tensor([r.doc["stages"][-1]["cost"]["added"] for r in group], dtype=torch.float64)
        vals["train_seconds"] = torch.tensor([r.doc["timing"]["train_seconds"] for r in group], dtype=torch.float64)
        vals["step_seconds"] = torch.tensor([mean_step(r) for r in group], dtype=torch.float64)
        spent = [spent_and_kept(r) for r in group]
        for k in spent[0]:
            vals[k] = torch.tensor([s[k] for s in spent], dtype=torch.float64)
        row = Row(labels[key], group[0].config["strategy"], group, text={"declares": declared(group)},
                  matrix=stats.mean_over_seeds([r.doc["accuracy_matrix"] for r in group]).tolist())
        seeds = [r.unit for r in group]
        for k, v in vals.items():
            ci = stats.bootstrap_ci(v, level=level)  # one method for every column, counts and seconds too
            row.values[k] = (ci.mean, (ci.high - ci.low) / 2)
            row.ci[k] = (ci.low, ci.high)
        scalars = {k: v for k, v in per_run.items() if v.dim() == 1}  # [runs]: acc, text_retention, ...
        for k, v in {**scalars, **vals}.items():
            row.per_seed[k] = dict(zip(seeds, v.cpu().tolist()))
        row.values["seeds"] = (float(len(group)), float("nan"))
        rows.append(row)
    letters = _set_groups(rows)
    cols = columns_for(tasks, bool(joint), mixed)
    rows = sort_rows(rows, cols, sort)
    examples = budget_examples(runs[0].doc)
    given = {budget_text(r.doc) for r in runs}  # one, unless its runs reach the budget by several step counts
    budget = given.pop() if len(given) == 1 else f"{examples:,} examples"
    return Table(name, tasks, cols, rows, order, is_default_order(runs[0].doc), letters, examples, budget,
                 main_budget), skipped


def _labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """Row labels: the strategy name, plus what tells apart rows of the same strategy."""
    by_strategy = defaultdict(list)
    for key, runs in groups.items():
        by_strategy[runs[0].config["strategy"]].append(key)
    labels = {}
    for strategy, keys in by_strategy.items():
        if len(keys) == 1:
            labels[keys[0]] = with_scoring(strategy, groups[keys[0]][0].doc)
            continue
        flat = {k: _flatten(json.loads(k)) for k in keys}
        differing = sorted({f for k in keys for f in flat[k]
                            if len({json.dumps(flat[j].get(f)) for j in keys}) > 1} - {"strategy", "scoring"})
        short = _short_names(differing)
        for k in keys:
            parts = [f"{short[f]}={flat[k].get(f, 'default')}" for f in differing]
            labels[k] = with_scoring(f"{strategy} ({', '.join(parts)})" if parts else strategy, groups[k][0].doc)
    return labels


def _short_names(fields: list[str]) -> dict[str, str]:
    """Each dotted field by its last part where that tells it apart from the others ("lr"), else by as many parts
    as it takes ("budget.steps" beside "pretrain.steps")."""
    out = {}
    for f in fields:
        parts = f.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(g != f and (g == name or g.endswith("." + name)) for g in fields):
                break
        out[f] = name
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty dict (no options) adds nothing
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def columns_for(tasks: list[dict], with_intransigence: bool, mixed: list[str] = ()) -> list[Column]:
    """A table's columns: letter group and the metrics, retention per task, the mixed-modality probes' accuracy
    after the last stage (`mixed`: probe names), what a row spent and kept, cost and seeds."""
    # Group: letters as text; its value (for sorting) is the index of the row's first letter, 0 for 'a'.
    cols = [Column("group", "Group", False, "text"), Column("acc", "ACC", True), Column("bwt", "BWT", True),
            Column("fwt", "FWT", True),
            Column("forgetting", "Forgetting", False)]
    if with_intransigence:
        cols.append(Column("intransigence", "Intransigence", False))
    # Retention of every task but the last (whose reference is its own final accuracy: always 100%).
    cols += [Column("retention:" + t["name"], f"{t['name'].capitalize()} ret. %", True, "percent")
             for t in tasks[:-1]]
    cols += [Column("mixed:" + p, f"Mixed {p}", True) for p in mixed]
    # What each row spent and kept: the protocol's budget and the strategy's declared memory.
    cols += [Column("budget_ratio", "Budget x", None, "ratio"), Column("train_flops", "Train FLOPs", False, "flops"),
             Column("past_train", "Past train items", None, "count"), Column("past_val", "Past val items", None, "count"),
             Column("task_weight_bytes", "Task weights", None, "bytes"), Column("declares", "Keeps / knows", None, "text")]
    cols += [Column("trainable", "Trainable", False, "count"), Column("added", "Added", False, "count"),
             Column("train_seconds", "Train s", False, "seconds"), Column("step_seconds", "s/step", False, "step"),
             Column("seeds", "Seeds", None, "int")]
    return cols


def _set_groups(rows: list[Row]) -> grouping.Grouping:
    """The letters of each row on ACC (grouping.letter_groups: paired t-tests over shared seeds, Holm, a compact
    letter display), named by row label; a row with no defined ACC gets none."""
    names = [r.label for r in rows]
    if len(set(names)) < len(names):  # labels tell rows apart; should two not, number them
        names = [f"{r.label} #{i}" for i, r in enumerate(rows)]
    g = grouping.letter_groups(names, [r.per_seed["acc"] for r in rows])
    for name, r in zip(names, rows):
        letters = g.letters[name]
        r.text["group"] = letters
        first = grouping.LETTERS.find(letters[0]) if letters else -1
        r.values["group"] = (float("nan") if first < 0 else float(first), float("nan"))
    return g


# Recipes that spend a stage alike, shown side by side in a stream's budget curves wherever both ran with the same
# examples seen per stage: each side a strategy and the options its runs must have (floats within 0.01).
RECIPE_PAIRS: tuple[tuple[tuple[str, dict], tuple[str, dict]], ...] = (
    # MoExtend's phases=budget aligns the projector alone for 40% of the stage; full fine-tuning with LLaVA's
    # alignment phase of the same share
    (("moextend", {"phases": "budget"}), ("full-ft", {"align_fraction": 0.4})),
    # phases=paper: alignment and fine-tuning the whole budget each and router tuning a quarter (2.25x): alignment
    # is 4/9 of what it sees; full-ft run at 2.25x the steps with that share sees as many examples
    (("moextend", {"phases": "paper"}), ("full-ft", {"align_fraction": 4 / 9})),
)


def _budget_curves(tables: list[Table]) -> list[BudgetCurves]:
    """Per stream and order: each strategy's curve across the budgets of its tables (rows of the same strategy and
    options whatever their step count; two budgets or more), the matched-accuracy text retention, and the rows of
    RECIPE_PAIRS at equal examples; a stream with neither curves nor pairs has none."""
    by_stream: dict[str, list[Table]] = defaultdict(list)
    for t in tables:
        by_stream[t.stream_slug].append(t)
    out = []
    for slug, ts in by_stream.items():
        retained = ts[0].tasks[0]["name"]
        points: dict[str, list[Point]] = defaultdict(list)
        runs: dict[str, list[Run]] = {}
        for t in ts:
            for r in t.rows:
                key = _curve_key(r.runs[0])
                points[key].append(_point(t, r, "retention:" + retained))
                runs.setdefault(key, r.runs)
        labels = _labels(runs)  # told apart by their options, never by their steps
        curves = sorted((make_curve(labels[k], runs[k][0].config["strategy"], pts) for k, pts in points.items()
                         if len(pts) >= 2), key=lambda c: c.label)
        pairs = _recipe_pairs(ts, "retention:" + retained, labels)
        if not curves and not pairs:
            continue
        target = matched_target(curves)
        out.append(BudgetCurves(
            ts[0].stream, ts[0].stream_title, slug, sorted({(t.examples, t.budget) for t in ts}), curves, target,
            {c.label: None if target is None else retention_at(c, target) for c in curves}, retained, pairs))
    return out


def _curve_key(run: Run) -> str:
    """A row's key without its step count: the same strategy and options at another budget."""
    c = json.loads(run.group_key())
    c.get("budget", {}).pop("steps", None)
    return json.dumps(c, sort_keys=True)


def _point(t: Table, r: Row, retention: str) -> Point:
    """A row as a budget curve's point: its means and intervals from the table."""
    def mean(k: str) -> float:
        return r.values.get(k, (math.nan, math.nan))[0]

    def ci(k: str) -> tuple[float, float]:
        return r.ci.get(k, (math.nan, math.nan))

    return Point(t.examples, mean("acc"), *ci("acc"), mean("new_task_acc"), mean(retention), *ci(retention),
                 mean("train_flops"), mean("stage_examples"))


def _recipe_pairs(tables: list[Table], retention: str, labels: dict[str, str]) -> list[RecipePair]:
    """The rows of RECIPE_PAIRS that ran with the same examples seen per stage, side by side, each by its label
    across budgets (`labels`, by _curve_key: its options told, as a budget's own table may not need to)."""
    def matches(r: Row, strategy: str, options: dict) -> bool:
        have = r.runs[0].config.get("strategy_options") or {}
        return r.strategy == strategy and all(
            k in have and (math.isclose(have[k], v, abs_tol=0.01) if isinstance(v, float) and
                           isinstance(have[k], (int, float)) else have[k] == v) for k, v in options.items())

    rows = [(t, r) for t in tables for r in t.rows]
    out = []
    for (sa, oa), (sb, ob) in RECIPE_PAIRS:
        for ta, a in rows:
            if not matches(a, sa, oa):
                continue
            pa = _point(ta, a, retention)
            for tb, b in rows:
                if matches(b, sb, ob) and round((pb := _point(tb, b, retention)).seen) == round(pa.seen):
                    out.append(RecipePair(pa.seen, (labels[_curve_key(a.runs[0])], pa),
                                          (labels[_curve_key(b.runs[0])], pb)))
    return sorted(out, key=lambda p: (p.examples, p.a[0], p.b[0]))


REFERENCE_STRATEGIES = ("joint", "single-ft")  # whose diagonals give a*_k


def _joint_reference(groups: dict[str, list[Run]], dev) -> dict[str, object]:
    """a*_k per base model and budget (metrics.best_joint_reference): the best mean R[k, k] of the reference
    strategies' rows (joint training on tasks 1..k, and fine-tuning on task k alone), so that intransigence is
    measured against the best model of task k that the benchmark has."""
    import torch

    from cl_bench.analysis.metrics import best_joint_reference

    references: dict[str, list] = defaultdict(list)
    for group in groups.values():
        if group[0].config["strategy"] in REFERENCE_STRATEGIES:
            references[model_key(group[0])].append(
                torch.tensor([r.doc["accuracy_matrix"] for r in group], dtype=torch.float64, device=dev))
    return {k: best_joint_reference(R) for k, R in references.items()}


def sort_rows(rows: list[Row], cols: list[Column], key: str) -> list[Row]:
    """`rows` best first by the column `key` (a key or a header), NaN last, ties by label."""
    by_key = {c.key: c for c in cols}
    aliases = {c.header.lower(): c.key for c in cols}
    col = by_key.get(key) or by_key.get(aliases.get(key.lower(), ""))
    if col is None:
        raise UsageError(f"cannot sort by {key!r}; choose one of: {', '.join(c.key for c in cols)}")
    sign = -1.0 if col.higher_is_better in (True, None) else 1.0

    def order(r: Row):
        m = r.values.get(col.key, (float("nan"), 0))[0]
        return (math.isnan(m), sign * m if not math.isnan(m) else 0.0, r.label)

    return sorted(rows, key=order)
