"""The leaderboard: result files -> one table per stream, mean and 95% interval over seeds, and tiers.

Nothing is re-run. Every metric is recomputed from the stored accuracy matrices with the
batched torch functions of cl_bench.analysis.metrics (on the device given; all runs of a row in one
call), so a change of definition reaches old results too; intervals and tiers come from
cl_bench.analysis.stats and .grouping. A file that cannot be used (unreadable, newer schema, a failed
or incomplete run, a damaged field, a second copy of a run) is reported by name and left out (collect.py).

Here the tables are built; formats.py writes them, readme.py splices their summary into a README,
figures.py draws them.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from cl_bench.analysis import grouping, stats
from cl_bench.errors import UsageError
from cl_bench.reporting.collect import (Run, collect, declared, drop_repeats, is_default_order, mean_step, model_key,
                                        run_order, spent_and_kept)
from cl_bench.reporting.formats import number as _number, render
from cl_bench.reporting.readme import readme_section, splice_readme
from cl_bench.reporting.tables import Column, Leaderboard, Row, Table

# What the command line (cl_bench/cli/) imports from here, besides build, find_row and sort_rows: their homes are
# collect.py, formats.py and readme.py.
__all__ = ["build", "columns_for", "find_row", "sort_rows", "collect", "render", "readme_section", "splice_readme",
           "_number"]


def build(results_dir: Path, *, stream: str | None = None, sort: str = "acc", device: str = "cpu",
          level: float = 0.95) -> Leaderboard:
    """The leaderboard of every stream under `results_dir` (or only `stream`), rows sorted by `sort`."""
    import torch

    from cl_bench.analysis import metrics

    runs, skipped = collect(results_dir)
    # One table per stream and order of its new tasks (files before clbench 0.4 record no order: their own).
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
    for name, order in sorted(by_stream, key=lambda k: (k[0], not is_default_order(by_stream[k][0].doc), k[1])):
        stream_runs = by_stream[name, order]
        # The stream's tasks are those most of its runs have (then the first file's), so that one odd file
        # cannot push the good runs out.
        names = [tuple(t["name"] for t in r.doc["stream"]["tasks"]) for r in stream_runs]
        tasks = stream_runs[names.index(max(names, key=Counter(names).__getitem__))].doc["stream"]["tasks"]
        groups: dict[str, list[Run]] = defaultdict(list)
        for r in stream_runs:
            if [t["name"] for t in r.doc["stream"]["tasks"]] != [t["name"] for t in tasks]:
                skipped.append((r.path, f"its tasks differ from the other runs of stream {name!r}"))
                continue
            groups[r.group_key()].append(r)
        for key, group in groups.items():  # a run copied into a row is one seed, not two
            groups[key], repeats = drop_repeats(group)
            skipped += repeats
        joint = _joint_reference(groups, dev)
        labels = _labels(groups)
        chance = torch.tensor([t["chance"] for t in tasks], dtype=torch.float64, device=dev)
        rows = []
        for key, group in groups.items():
            group.sort(key=lambda r: r.doc["seed"])
            R = torch.tensor([r.doc["accuracy_matrix"] for r in group], dtype=torch.float64, device=dev)
            per_run = metrics.all_metrics(R, chance=chance, joint_diag=joint.get(model_key(group[0])))
            vals = {k: per_run[k] for k in ("acc", "bwt", "fwt", "forgetting")}
            if joint:
                vals["intransigence"] = per_run["intransigence"]
            ret = per_run["retention"]  # [runs, T+1]: 100 R[T, j] / R[j, j] (text: / R[0, 0])
            for j, t in enumerate(tasks[:-1]):
                vals["retention:" + t["name"]] = ret[:, j]
            vals["trainable"] = torch.tensor([max(s["cost"]["trainable"] for s in r.doc["stages"]) for r in group],
                                             dtype=torch.float64)
            vals["added"] = torch.tensor([r.doc["stages"][-1]["cost"]["added"] for r in group], dtype=torch.float64)
            vals["train_seconds"] = torch.tensor([r.doc["timing"]["train_seconds"] for r in group],
                                                 dtype=torch.float64)
            vals["step_seconds"] = torch.tensor([mean_step(r) for r in group], dtype=torch.float64)
            spent = [spent_and_kept(r) for r in group]
            for k in spent[0]:
                vals[k] = torch.tensor([s[k] for s in spent], dtype=torch.float64)
            row = Row(labels[key], group[0].config["strategy"], group, text={"declares": declared(group)},
                      matrix=stats.mean_over_seeds([r.doc["accuracy_matrix"] for r in group]).tolist())
            seeds = [r.doc["seed"] for r in group]
            for k, v in vals.items():
                ci = stats.bootstrap_ci(v, level=level)  # one method for every column, counts and seconds too
                row.values[k] = (ci.mean, (ci.high - ci.low) / 2)
                row.ci[k] = (ci.low, ci.high)
            scalars = {k: v for k, v in per_run.items() if v.dim() == 1}  # [runs]: acc, text_retention, ...
            for k, v in {**scalars, **vals}.items():
                row.per_seed[k] = dict(zip(seeds, v.cpu().tolist()))
            row.values["seeds"] = (float(len(group)), float("nan"))
            rows.append(row)
        _set_tiers(rows)
        cols = columns_for(tasks, bool(joint))
        rows = sort_rows(rows, cols, sort)
        tables.append(Table(name, tasks, cols, rows, order, is_default_order(stream_runs[0].doc)))
    return Leaderboard(tables, skipped)


def _labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """Row labels: the strategy name, plus what tells apart rows of the same strategy."""
    by_strategy = defaultdict(list)
    for key, runs in groups.items():
        by_strategy[runs[0].config["strategy"]].append(key)
    labels = {}
    for strategy, keys in by_strategy.items():
        if len(keys) == 1:
            labels[keys[0]] = strategy
            continue
        flat = {k: _flatten(json.loads(k)) for k in keys}
        differing = sorted({f for k in keys for f in flat[k]
                            if len({json.dumps(flat[j].get(f)) for j in keys}) > 1} - {"strategy"})
        for k in keys:
            parts = [f"{f.split('.')[-1]}={flat[k].get(f, 'default')}" for f in differing]
            labels[k] = f"{strategy} ({', '.join(parts)})" if parts else strategy
    return labels


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty dict (no options) adds nothing
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def columns_for(tasks: list[dict], with_intransigence: bool) -> list[Column]:
    """A table's columns: tier and the metrics, retention per task, what a row spent and kept, cost and seeds."""
    cols = [Column("tier", "Tier", False, "int"), Column("acc", "ACC", True), Column("bwt", "BWT", True),
            Column("fwt", "FWT", True),
            Column("forgetting", "Forgetting", False)]
    if with_intransigence:
        cols.append(Column("intransigence", "Intransigence", False))
    # Retention of every task but the last (whose reference is its own final accuracy: always 100%).
    cols += [Column("retention:" + t["name"], f"{t['name'].capitalize()} ret. %", True, "percent")
             for t in tasks[:-1]]
    # What each row spent and kept: the protocol's budget and the strategy's declared memory.
    cols += [Column("budget_ratio", "Budget x", None, "ratio"), Column("train_flops", "Train FLOPs", False, "flops"),
             Column("past_train", "Past train items", None, "count"), Column("past_val", "Past val items", None, "count"),
             Column("task_weight_bytes", "Task weights", None, "bytes"), Column("declares", "Keeps / knows", None, "text")]
    cols += [Column("trainable", "Trainable", False, "count"), Column("added", "Added", False, "count"),
             Column("train_seconds", "Train s", False, "seconds"), Column("step_seconds", "s/step", False, "step"),
             Column("seeds", "Seeds", None, "int")]
    return cols


def _set_tiers(rows: list[Row]) -> None:
    """Tier 1, 2, ... of each row on ACC (grouping.tiers: paired t-tests over shared seeds, Holm)."""
    t = grouping.tiers([str(i) for i in range(len(rows))], [r.per_seed["acc"] for r in rows])
    for i, r in enumerate(rows):
        tier = t.tier[str(i)]
        r.values["tier"] = (float("nan") if tier is None else float(tier), float("nan"))


def find_row(table: Table, name: str) -> Row:
    """The row labelled `name`, or the only row of strategy `name`; UsageError naming the choices otherwise."""
    for r in table.rows:
        if r.label == name:
            return r
    rows = [r for r in table.rows if r.strategy == name]
    if len(rows) == 1:
        return rows[0]
    if rows:
        labels = ", ".join(repr(r.label) for r in rows)
        raise UsageError(f"strategy {name!r} has {len(rows)} rows with different options on stream {table.stream!r}: "
                         f"{labels}; pass one of these labels instead")
    known = ", ".join(sorted({r.label for r in table.rows}))
    raise UsageError(f"no finished runs of {name!r} on stream {table.stream!r} (there: {known}); "
                     f"run `clbench run --stream {table.stream} --strategy {name}` first")



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
