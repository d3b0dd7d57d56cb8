"""The leaderboard: result files -> one table per stream, mean and 95% interval over seeds, and tiers.

Nothing is re-run. Every metric is recomputed from the stored accuracy matrices with the
batched torch functions of cl_bench.analysis.metrics (on the device given; all runs of a row in one
call), so a change of definition reaches old results too. A file that cannot be used
(unreadable, newer schema, a failed or incomplete run) is reported by name and left out.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cl_bench.analysis import stats
from cl_bench.results import load_result
from cl_bench.results import check_result

FORMATS = ("md", "csv", "latex", "html")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    higher_is_better: bool | None  # None: not a quality (e.g. seeds)
    kind: str = "score"  # score | percent | count | seconds | step | int | ratio | flops | bytes | text


@dataclass
class Run:
    path: Path
    doc: dict

    @property
    def config(self) -> dict:
        return self.doc["config"]

    def group_key(self) -> str:
        """Runs that differ only by seed (or by where they ran) share a row."""
        c = dict(self.config)
        for k in ("seed", "device", "results_dir", "cache_dir", "eval_batch_size"):
            c.pop(k, None)
        return json.dumps(c, sort_keys=True)


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


def collect(results_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every usable result file under results_dir/runs, and the unusable ones with the reason."""
    root = Path(results_dir) / "runs"
    runs, skipped = [], []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            doc = load_result(path)
        except ValueError as e:
            skipped.append((path, str(e).removeprefix(f"{path}: ")))
            continue
        if doc.get("status") != "complete":
            skipped.append((path, f"status {doc.get('status')!r}: not a finished run"))
            continue
        run = Run(path, doc)
        problem = unusable(run)
        if problem:
            skipped.append((path, problem))
            continue
        runs.append(run)
    return runs, skipped


def unusable(run: Run) -> str | None:
    """Why the leaderboard and the figures cannot use this run, or None: the result checks, then every field
    they read, read once here, so that a malformed file is left out with its reason rather than stopping them."""
    try:
        problems = check_result(run.doc)
        if problems:
            return "; ".join(problems[:3])
        doc = run.doc
        if not isinstance(doc["config"]["strategy"], str) or not isinstance(doc["seed"], int):
            return "malformed: config.strategy must be a name and seed an integer"
        run.group_key()
        _model_key(run)
        run_order(doc)
        _is_default_order(doc)
        for t in doc["stream"]["tasks"]:
            if not isinstance(t["name"], str) or not 0.0 <= float(t["chance"]) <= 1.0:
                return "malformed: a task without a name or with a chance outside [0, 1]"
        float(doc["timing"]["train_seconds"])
        for st in doc["stages"]:
            int(st["cost"]["trainable"]), int(st["cost"]["added"])
        _mean_step(run)
        _spent_and_kept(run)
        _declared([run])
        float(doc["metrics"]["acc"])
    except KeyError as e:
        return f"malformed: field {e.args[0]!r} missing"
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        return f"malformed: {type(e).__name__}: {e}"
    return None


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


def _spent_and_kept(run: Run) -> dict[str, float]:
    """Per run: the largest budget ratio of a stage, training FLOPs, the most past items held after a stage, and the
    per-task weight bytes at the end (NaN for result files older than schema 2, which did not record them)."""
    stages = run.doc["stages"]
    if run.doc.get("schema_version", 1) < 2:
        return dict.fromkeys(("budget_ratio", "train_flops", "past_train", "past_val", "task_weight_bytes"),
                             float("nan"))
    return {"budget_ratio": max(s["training"]["budget_ratio"] for s in stages),
            "train_flops": sum(s["training"]["flops"] for s in stages),
            "past_train": max(sum(s["memory"]["past_train_items"].values()) for s in stages),
            "past_val": max(sum(s["memory"]["past_val_items"].values()) for s in stages),
            "task_weight_bytes": stages[-1]["memory"]["task_weight_bytes"]}


def _declared(group: list[Run]) -> str:
    from cl_bench.api.strategy import Declaration

    labels = {Declaration(**r.doc["declaration"]).short() if "declaration" in r.doc else "n/a" for r in group}
    return " / ".join(sorted(labels))


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
            raise ValueError(f"no finished runs of stream {stream!r} under {results_dir}/runs (streams there: {known})")
        by_stream = {k: v for k, v in by_stream.items() if k[0] == stream}
    dev = torch.device(device)
    tables = []
    for name, order in sorted(by_stream, key=lambda k: (k[0], not _is_default_order(by_stream[k][0].doc), k[1])):
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
        joint = _joint_reference(groups, dev)
        labels = _labels(groups)
        chance = torch.tensor([t["chance"] for t in tasks], dtype=torch.float64, device=dev)
        rows = []
        for key, group in groups.items():
            group.sort(key=lambda r: r.doc["seed"])
            R = torch.tensor([r.doc["accuracy_matrix"] for r in group], dtype=torch.float64, device=dev)
            per_run = metrics.all_metrics(R, chance=chance, joint_diag=joint.get(_model_key(group[0])))
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
            vals["step_seconds"] = torch.tensor([_mean_step(r) for r in group], dtype=torch.float64)
            spent = [_spent_and_kept(r) for r in group]
            for k in spent[0]:
                vals[k] = torch.tensor([s[k] for s in spent], dtype=torch.float64)
            row = Row(labels[key], group[0].config["strategy"], group, text={"declares": _declared(group)})
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
        tables.append(Table(name, tasks, cols, rows, order, _is_default_order(stream_runs[0].doc)))
    return Leaderboard(tables, skipped)


def run_order(doc: dict) -> tuple[str, ...]:
    """The order a run learnt its stream's new tasks in."""
    return tuple(doc["stream"].get("order") or [t["name"] for t in doc["stream"]["tasks"][1:]])


def _is_default_order(doc: dict) -> bool:
    return list(run_order(doc)) == list(doc["stream"].get("default_order") or run_order(doc))


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

    Runs with the same seed share the base model and projector initialisation, so the test pairs
    them by seed: a paired t-test for two orders, Friedman's test (scipy) for three or more, over
    the seeds that every order has; at least 2 shared seeds (3 for Friedman) are needed.
    """
    from scipy.stats import friedmanchisquare

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
            per_order = [[r.per_seed["acc"][s] for s in shared] for _, r in rows]
            test, p = "", float("nan")
            if len(rows) == 2 and len(shared) >= 2:
                test, p = "paired t", stats.paired_comparison(per_order[0], per_order[1]).p_value
            elif len(rows) >= 3 and len(shared) >= 3:
                test, p = "Friedman", float(friedmanchisquare(*per_order).pvalue)
            out.append(OrderEffect(name, label, [o for o, _ in rows], [r.values["acc"][0] for _, r in rows],
                                   shared, test, p))
    return out


ORDER_EFFECTS_HEADER = ("Stream", "Strategy", "ACC per order", "Spread", "Seeds", "Test", "p", "Order matters")


def order_effects_table(board: Leaderboard, alpha: float = 0.05) -> tuple[str, list[list[str]]]:
    """The order effects as (what the table says, its rows as cells under ORDER_EFFECTS_HEADER); no rows when
    no strategy ran in two orders of a stream."""
    note = ("Final ACC of each strategy run in several orders of a stream's new tasks (mean over seeds), the spread "
            "between its best and worst order, and whether the order matters: a paired t-test (two orders) or "
            f"Friedman's test (three or more) over the seeds every order has; p < {alpha} counts as an effect, "
            "otherwise no effect was detected.")
    rows = []
    for e in order_effects(board):
        verdict = "n/a" if not e.test else "yes" if e.p_value < alpha else "no effect detected"
        rows.append([e.stream, e.label, "; ".join(f"{' > '.join(o)}: {a:.3f}" for o, a in zip(e.orders, e.acc)),
                     f"{e.spread:.3f}", str(len(e.seeds)), e.test or "-",
                     "" if math.isnan(e.p_value) else f"{e.p_value:.3g}", verdict])
    return note, rows


def _md(text: str) -> str:
    """A Markdown table cell's text: a | inside (e.g. in an option's value) would end the cell."""
    return str(text).replace("|", "\\|")


def order_effects_markdown(board: Leaderboard, heading: str = "## Order effects") -> list[str]:
    note, rows = order_effects_table(board)
    if not rows:
        return []
    return [f"{heading}\n", note + "\n", "| " + " | ".join(ORDER_EFFECTS_HEADER) + " |",
            "|---|---|---|---:|---:|---|---:|---|", *("| " + " | ".join(map(_md, r)) + " |" for r in rows), ""]


def _set_tiers(rows: list[Row]) -> None:
    """Tier 1, 2, ... of each row on ACC (stats.tiers: paired t-tests over shared seeds, Holm)."""
    t = stats.tiers([str(i) for i in range(len(rows))], [r.per_seed["acc"] for r in rows])
    for i, r in enumerate(rows):
        tier = t.tier[str(i)]
        r.values["tier"] = (float("nan") if tier is None else float(tier), float("nan"))


def interval_note(level: float = 0.95) -> str:
    """What the intervals and the Tier column are, for the note under each table."""
    return (f"Intervals: mean [{level:.0%} interval] over seeds, an expanded percentile bootstrap of the mean "
            f"(scipy.stats.bootstrap, {stats.N_RESAMPLES:,} resamples, seed {stats.SEED}), inside the seeds' range "
            "and so inside the metric's. An interval inside n seeds' range covers a symmetric spread's mean at most "
            "1 - 2^(1-n) of the time (94% at 5 seeds): compare strategies by tier or with `clbench compare`. "
            + stats.TIER_RULE.format(alpha=0.05))


def find_row(table: Table, name: str) -> Row:
    """The row labelled `name`, or the only row of strategy `name`; ValueError naming the choices otherwise."""
    for r in table.rows:
        if r.label == name:
            return r
    rows = [r for r in table.rows if r.strategy == name]
    if len(rows) == 1:
        return rows[0]
    if rows:
        labels = ", ".join(repr(r.label) for r in rows)
        raise ValueError(f"strategy {name!r} has {len(rows)} rows with different options on stream {table.stream!r}: "
                         f"{labels}; pass one of these labels instead")
    known = ", ".join(sorted({r.label for r in table.rows}))
    raise ValueError(f"no finished runs of {name!r} on stream {table.stream!r} (there: {known}); "
                     f"run `clbench run --stream {table.stream} --strategy {name}` first")


def _mean_step(run: Run) -> float:
    """Seconds per optimizer step, averaged over stages (a strategy with phases reports its main one)."""
    steps = [s["train_stats"].get("seconds_per_step") for s in run.doc["stages"]]
    steps = [x for x in steps if isinstance(x, (int, float)) and x > 0]
    return sum(steps) / len(steps) if steps else float("nan")


def _model_key(run: Run) -> str:
    c = run.config
    return json.dumps([c["model"], c["budget"], c["pretrain"], c.get("encoders")], sort_keys=True)


REFERENCE_STRATEGIES = ("joint", "single-ft")  # whose diagonals give a*_k


def _joint_reference(groups: dict[str, list[Run]], dev) -> dict[str, object]:
    """a*_k per base model and budget: the best mean R[k, k] of the reference strategies' rows (joint training
    on tasks 1..k, and fine-tuning on task k alone), so that intransigence is measured against the best model of
    task k that the benchmark has."""
    import torch

    from cl_bench.analysis.metrics import joint_reference

    diagonals: dict[str, list] = defaultdict(list)
    for group in groups.values():
        if group[0].config["strategy"] not in REFERENCE_STRATEGIES:
            continue
        R = torch.tensor([r.doc["accuracy_matrix"] for r in group], dtype=torch.float64, device=dev).mean(0)
        diagonals[_model_key(group[0])].append(joint_reference(R))
    return {k: torch.stack(d).amax(0) for k, d in diagonals.items()}


def sort_rows(rows: list[Row], cols: list[Column], key: str) -> list[Row]:
    by_key = {c.key: c for c in cols}
    aliases = {c.header.lower(): c.key for c in cols}
    col = by_key.get(key) or by_key.get(aliases.get(key.lower(), ""))
    if col is None:
        raise ValueError(f"cannot sort by {key!r}; choose one of: {', '.join(c.key for c in cols)}")
    sign = -1.0 if col.higher_is_better in (True, None) else 1.0

    def order(r: Row):
        m = r.values.get(col.key, (float("nan"), 0))[0]
        return (math.isnan(m), sign * m if not math.isnan(m) else 0.0, r.label)

    return sorted(rows, key=order)


# -- rendering ---------------------------------------------------------------------------
def _number(v: float, kind: str) -> str:
    if math.isnan(v):
        return "n/a"
    if kind == "ratio":
        return f"{v:.2f}"
    if kind == "flops":
        return f"{v / 1e12:.2f}T" if v >= 1e12 else f"{v / 1e9:.1f}G"
    if kind == "bytes":
        return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 2**10:.0f} KiB" if v >= 2**10 else f"{v:.0f} B"
    if kind == "count":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"
    if kind == "percent":
        return f"{v:.1f}"
    if kind == "seconds":
        return f"{v:.0f}"
    if kind == "step":
        return f"{v:.3f}"
    if kind == "int":
        return f"{v:.0f}"
    return f"{v:.3f}"


def cell(row: Row, col: Column, pm: str = " ") -> str:
    """The mean, then its interval as [low, high] (after `pm`) where there is one and it is not a point."""
    if col.kind == "text":
        return row.text.get(col.key, "")
    mean = row.values.get(col.key, (float("nan"), float("nan")))[0]
    low, high = row.ci.get(col.key, (float("nan"), float("nan")))
    text = _number(mean, col.kind)
    if not math.isnan(mean) and not math.isnan(low) and col.kind != "int" and not (
            col.kind in ("count", "ratio", "bytes") and low == high):
        text += f"{pm}[{_number(low, col.kind)}, {_number(high, col.kind)}]"
    return text


def to_markdown(board: Leaderboard, level: float = 0.95) -> str:
    out = []
    for t in board.tables:
        out.append(f"## {t.title}\n")
        out.append(f"Mean [{level:.0%} interval] over seeds. Tasks: "
                   + ", ".join(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f})" for x in t.tasks) + ".\n")
        out.append("| Strategy | " + " | ".join(c.header for c in t.columns) + " |")
        out.append("|---|" + "|".join("---:" for _ in t.columns) + "|")
        for r in t.rows:
            out.append(f"| {_md(r.label)} | " + " | ".join(cell(r, c) for c in t.columns) + " |")
        out.append("")
        out.append(interval_note(level) + "\n")
        out += matrix_table(t)
    out += order_effects_markdown(board)
    out += _skipped_lines(board)
    return "\n".join(out).rstrip() + "\n"


# The README's summary: the columns a reader compares first (the full table is in results/leaderboard.md).
README_COLUMNS = ("tier", "acc", "bwt", "forgetting", "intransigence", "retention:text", "budget_ratio", "past_train",
                  "past_val", "declares", "trainable", "step_seconds", "seeds")
README_BEGIN, README_END = "<!-- leaderboard:begin (clbench publish --readme) -->", "<!-- leaderboard:end -->"


def readme_section(board: Leaderboard, level: float = 0.95) -> str:
    """The README's leaderboard section: per stream, the README_COLUMNS of the table, the note, the matrices."""
    out = []
    for t in board.tables:
        cols = [c for k in README_COLUMNS for c in t.columns if c.key == k]
        out.append(f"**{t.title}** (tasks: " + ", ".join(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f}, "
                                                          f"{x.get('n_test', '?')} test items)" for x in t.tasks)
                   + ")\n")
        out.append("| Strategy | " + " | ".join(c.header for c in cols) + " |")
        out.append("|---|" + "|".join("---:" for _ in cols) + "|")
        for r in t.rows:
            out.append(f"| {_md(r.label)} | " + " | ".join(cell(r, c) for c in cols) + " |")
        out.append("")
        out.append(interval_note(level) + "\n")
        out += matrix_table(t)
    out += order_effects_markdown(board, heading="**Order effects**")
    return "\n".join(out).rstrip() + "\n"


def splice_readme(text: str, section: str) -> str:
    """`text` with everything between README_BEGIN and README_END replaced by `section`."""
    from cl_bench.results import splice_between

    return splice_between(text, README_BEGIN, README_END, "\n\n" + section + "\n", "leaderboard")


def matrix_table(t: Table) -> list[str]:
    """Each row's mean accuracy matrix, one column per stage, tasks in stream order within a cell."""
    names = [x["name"] for x in t.tasks]
    stages = ["base"] + [f"after {n}" for n in names[1:]]
    out = [f"Mean accuracy matrix R[stage, task] over seeds; each cell lists {' / '.join(names)}.\n",
           "| Strategy | " + " | ".join(stages) + " |", "|---|" + "|".join("---" for _ in stages) + "|"]
    for r in t.rows:
        R = [[sum(run.doc["accuracy_matrix"][i][j] for run in r.runs) / len(r.runs) for j in range(len(names))]
             for i in range(len(names))]
        out.append(f"| {_md(r.label)} | " + " | ".join(" / ".join(f"{a:.3f}" for a in row) for row in R) + " |")
    return out + [""]


def _skipped_lines(board: Leaderboard) -> list[str]:
    if not board.skipped:
        return []
    return ["Left out:", *[f"- {p}: {why}" for p, why in board.skipped], ""]


def to_csv(board: Leaderboard, level: float = 0.95) -> str:
    """One line per row: each column's mean, interval low and high; the last column says how they were made."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, t in enumerate(board.tables):
        if i == 0:
            header = ["stream", "order", "strategy", "label"]
            for c in t.columns:
                header += [c.key] if c.kind in ("int", "text") else [c.key, f"{c.key}_low", f"{c.key}_high"]
            w.writerow(header + ["method"])
        for r in t.rows:
            line = [t.stream, " > ".join(t.order), r.strategy, r.label]
            for c in t.columns:
                if c.kind == "text":
                    line.append(r.text.get(c.key, ""))
                    continue
                mean = r.values.get(c.key, (float("nan"), float("nan")))[0]
                low, high = r.ci.get(c.key, (float("nan"), float("nan")))
                line += [_raw(mean)] if c.kind == "int" else [_raw(mean), _raw(low), _raw(high)]
            w.writerow(line + [interval_note(level)])
    return buf.getvalue()


def _raw(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def to_latex(board: Leaderboard) -> str:
    """A booktabs tabular per stream."""
    def esc(s: str) -> str:
        return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)

    out = []
    for t in board.tables:
        out += [f"% {t.title}: mean [95% interval] over seeds", f"% {interval_note()}",
                r"\begin{tabular}{l" + "r" * len(t.columns) + "}",
                r"\toprule", "Strategy & " + " & ".join(esc(c.header) for c in t.columns) + r" \\", r"\midrule"]
        for r in t.rows:
            out.append(esc(r.label) + " & " + " & ".join(cell(r, c) for c in t.columns) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


def to_html(board: Leaderboard, figures: dict[str, dict[str, bytes]] | None = None, level: float = 0.95) -> str:
    """One self-contained page (nothing fetched): per stream the table (click a header to sort), the
    mean accuracy matrices, then the figures inlined as PNG data (click one to see it at full size)."""
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>clbench leaderboard</title><style>{_HTML_STYLE}</style></head><body>",
             "<h1>clbench leaderboard</h1>"]
    for t in board.tables:
        parts.append(f"<h2>{html.escape(t.title)}</h2>")
        parts.append(f"<p>Mean [{level:.0%} interval] over seeds. Tasks: "
                     + ", ".join(html.escape(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f})")
                                 for x in t.tasks) + ". Click a column's header to sort by it.</p>")
        parts.append(_html_table(t))
        parts.append(f"<p class='note'>{html.escape(interval_note(level))}</p>")
        parts.append(_html_matrix_table(t))
        parts += _html_figures((figures or {}).get(t.slug, {}))
    note, rows = order_effects_table(board)
    if rows:
        parts.append(f"<h2>Order effects</h2><p>{html.escape(note)}</p><div class='scroll'><table><thead><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in ORDER_EFFECTS_HEADER) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                     + "</tbody></table></div>")
    if board.skipped:
        parts.append("<h2>Left out</h2><ul>" + "".join(
            f"<li>{html.escape(str(p))}: {html.escape(why)}</li>" for p, why in board.skipped) + "</ul>")
    parts.append(f"<div id='zoom' hidden><img alt=''></div><script>{_HTML_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


_HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    ".scroll{overflow-x:auto;max-width:100%;margin-bottom:1em}"
    "table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;white-space:nowrap}"
    "td{text-align:right;font-variant-numeric:tabular-nums}td:first-child,th:first-child{text-align:left}"
    "td:first-child{position:sticky;left:0;background:#fff}th{background:#f4f4f4;position:sticky;top:0}"
    "table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e6e6e6}"
    "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}"
    "tbody tr:nth-child(even) td{background:#fafafa}"
    "figure{margin:1em 0}figure img{max-width:100%;height:auto;cursor:zoom-in;display:block}"
    "figcaption{font-size:13px;color:#555}.note{font-size:13px;color:#444;max-width:75em}"
    ".figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,1100px),1fr));gap:0 2em}"
    "#zoom{position:fixed;inset:0;background:rgba(0,0,0,.85);overflow:auto;cursor:zoom-out;z-index:9}"
    "#zoom img{display:block;margin:2em auto;background:#fff;max-width:none}"
)

# Sorting: by each cell's data-v (the mean, a number; empty for n/a, always last), else its text.
# The first click sorts best first (data-desc='1': higher is better), the next click reverses.
_HTML_SCRIPT = (
    "document.querySelectorAll('table.sortable').forEach(function(table){"
    "table.querySelectorAll('th').forEach(function(th,col){th.addEventListener('click',function(){"
    "var body=table.tBodies[0],rows=Array.from(body.rows);"
    "var desc=th.getAttribute('aria-sort')?th.getAttribute('aria-sort')==='ascending':th.dataset.desc==='1';"
    "table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort')});"
    "th.setAttribute('aria-sort',desc?'descending':'ascending');"
    "function key(r){var c=r.cells[col],v=c.dataset.v;return v===undefined?c.textContent:v===''?null:+v}"
    "rows.sort(function(a,b){var x=key(a),y=key(b);if(x===null||y===null)return(x===null)-(y===null);"
    "var d=typeof x==='number'?x-y:String(x).localeCompare(y);return desc?-d:d});"
    "rows.forEach(function(r){body.appendChild(r)})})})});"
    "var zoom=document.getElementById('zoom');"
    "document.querySelectorAll('figure img').forEach(function(img){img.addEventListener('click',function(){"
    "zoom.firstChild.src=img.src;zoom.hidden=false})});"
    "zoom.addEventListener('click',function(){zoom.hidden=true});"
    "document.addEventListener('keydown',function(e){if(e.key==='Escape')zoom.hidden=true});"
)


def _html_table(t: Table) -> str:
    """The leaderboard table, sortable: each cell keeps its raw mean in data-v."""
    head = "<th data-desc='0'>Strategy</th>" + "".join(
        f"<th data-desc='{0 if c.higher_is_better is False else 1}'>{html.escape(c.header)}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        cells = []
        for c in t.columns:
            mean = r.values.get(c.key, (float("nan"), float("nan")))[0]
            cells.append(f"<td data-v='{'' if math.isnan(mean) else repr(float(mean))}'>{html.escape(cell(r, c))}</td>")
        body.append(f"<tr><td>{html.escape(r.label)}</td>{''.join(cells)}</tr>")
    return (f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead><tbody>"
            + "\n".join(body) + "</tbody></table></div>")


def _html_matrix_table(t: Table) -> str:
    """Each row's mean accuracy matrix, as matrix_table writes it in the markdown."""
    lines = [ln for ln in matrix_table(t) if ln.startswith("|")]
    caption = matrix_table(t)[0].strip()

    def split(line: str) -> list[str]:
        return [x.strip() for x in line.strip().strip("|").split("|")]

    head, rows = split(lines[0]), [split(ln) for ln in lines[2:]]
    return (f"<p>{html.escape(caption)}</p><div class='scroll'><table><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in rows)
            + "</tbody></table></div>")


def _html_figures(figs: dict[str, bytes]) -> list[str]:
    """The stream's figures first (full width), then each strategy's, two side by side where they fit."""
    import base64

    def figure(name: str, png: bytes) -> str:
        data = base64.b64encode(png).decode("ascii")
        return (f"<figure><img alt='{html.escape(name)}' title='click to see it at full size' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(name)}</figcaption></figure>")

    per_row = [n for n in figs if n.endswith(("-accuracy.png", "-transfer.png", "-routing.png"))]
    stream = [n for n in figs if n not in per_row]
    out = [figure(n, figs[n]) for n in stream]
    if per_row:
        out.append("<h3>Per strategy: accuracy and transfer matrices, routing</h3><div class='figs'>"
                   + "".join(figure(n, figs[n]) for n in per_row) + "</div>")
    return out


def render(board: Leaderboard, fmt: str, figures=None) -> str:
    if fmt == "md":
        return to_markdown(board)
    if fmt == "csv":
        return to_csv(board)
    if fmt == "latex":
        return to_latex(board)
    if fmt == "html":
        return to_html(board, figures)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
