"""Findings: the sentences a reader would otherwise read off a stream's main table by eye, each computed from the
board (its letter groups, and paired tests over shared seeds for a few comparisons named in advance), so that the
docs' conclusions come out of the result files with their numbers and are never edited by hand.

The named comparisons are the questions the benchmark is built to answer (MoExtend against full fine-tuning and
against align-only; MMER against per-modality LoRA, with what each trains and stores; LoRA against full
fine-tuning), each strategy by its row at its defaults where variants run beside it (rows labelled by their
options). Each is one pre-named paired t-test at `alpha`, not adjusted for the others; the letter groups in the
table are the all-pairs, Holm-adjusted answer.
"""

from __future__ import annotations

import math

from cl_bench.analysis.stats import paired_comparison
from cl_bench.errors import UsageError
from cl_bench.reporting.formats import interval_text, number
from cl_bench.reporting.tables import DEFAULT_STREAM, AmbiguousRow, Leaderboard, Row, Table, find_row

PAIRS = (("moextend", "full-ft"), ("moextend", "align-only"), ("mmer", "lora-per-modality"), ("lora", "full-ft"))
FINDINGS_BEGIN = "<!-- findings:begin (clbench publish --page docs/leaderboard.md) -->"
FINDINGS_END = "<!-- findings:end -->"


def main_table(board: Leaderboard, stream: str = DEFAULT_STREAM) -> Table | None:
    """The stream's main table: its own order of new tasks, its main budget."""
    return next((t for t in board.tables if t.stream == stream and t.default_order and t.main_budget), None)


def _mean(row: Row, key: str) -> float:
    return row.values.get(key, (math.nan, math.nan))[0]


def _with_interval(row: Row, key: str, kind: str = "score") -> str:
    low, high = row.ci.get(key, (math.nan, math.nan))
    return interval_text(_mean(row, key), low, high, kind)


def _pair(table: Table, a: str, b: str) -> tuple[Row, Row] | str | None:
    """The rows of `a` and `b` (tables.find_row); None when either has none, and a sentence saying why not where a
    strategy's rows leave it open which one to compare."""
    try:
        return find_row(table, a), find_row(table, b)
    except AmbiguousRow as e:
        return f"{a} against {b}: not compared, {e.why}."
    except UsageError:
        return None


def compare(table: Table, a: str, b: str, key: str = "acc", alpha: float = 0.05, level: float = 0.95) -> str | None:
    """One sentence: the rows of `a` and `b` (a label, or a strategy's row at its defaults: tables.find_row) paired
    over their shared seeds on column `key`, named by their labels; None when either has no row at all, and a
    sentence saying why not where a strategy's rows leave it open which one to compare."""
    pair = _pair(table, a, b)
    if not isinstance(pair, tuple):
        return pair
    row_a, row_b = pair
    a, b = row_a.label, row_b.label
    va, vb = row_a.per_seed.get(key, {}), row_b.per_seed.get(key, {})
    shared = sorted(set(va) & set(vb))
    column = next((c for c in table.columns if c.key == key), None)
    header, kind = (column.header, column.kind) if column else (key, "score")

    def signed(v: float) -> str:
        return ("+" if v >= 0 else "") + number(v, kind)

    if len(shared) < 2:
        return f"{a} against {b} on {header}: fewer than 2 shared seeds ({len(shared)}), so no test."
    p = paired_comparison([va[s] for s in shared], [vb[s] for s in shared], level=level, alpha=alpha)
    verdict = (f"a tie (no difference detected at p < {alpha:g})" if not p.p_value < alpha
               else f"{a} {'higher' if p.mean_diff > 0 else 'lower'}")
    return (f"{a} against {b} on {header}: {number(p.mean_a, kind)} against {number(p.mean_b, kind)}, difference "
            f"{signed(p.mean_diff)} [{signed(p.low)}, {signed(p.high)}] (paired t-test over {p.n} shared seeds, "
            f"p = {p.p_value:.2g}; {a} ahead on {p.p_a_better:.0%} of them): {verdict}.")


def findings(board: Leaderboard, stream: str = DEFAULT_STREAM, pairs=PAIRS, alpha: float = 0.05,
             level: float = 0.95) -> list[str]:
    """The findings on `stream`'s main table, one sentence each (none when the stream has no table)."""
    t = main_table(board, stream)
    if t is None or not t.rows:
        return []
    rows = {r.label: r for r in t.rows}
    out = []
    if t.groups is not None and t.groups.order:
        best = t.groups.order[0]
        others = [n for n in t.groups.order[1:] if n in rows and not math.isnan(_mean(rows[n], "acc"))]
        tied = [n for n in others if not t.groups.differ(best, n)]
        below = [n for n in others if t.groups.differ(best, n)]
        n = t.groups.pairs
        family = f"paired t-tests over shared seeds, Holm-adjusted over {n} pair{'' if n == 1 else 's'}"
        out.append(f"Highest mean ACC on {t.title}: {best} ({_with_interval(rows[best], 'acc')}). "
                   + (f"Not significantly different from it (they share its letter; {family}): {', '.join(tied)}"
                      + (f"; significantly below it: {', '.join(below)}." if below else ".")
                      if tied else f"Every other strategy is significantly below it ({family})."))
    kept = [r for r in t.rows if not math.isnan(_mean(r, "retention:text"))]
    if len(kept) >= 2:
        kept.sort(key=lambda r: -_mean(r, "retention:text"))
        top = [r for r in kept if _mean(r, "retention:text") == _mean(kept[0], "retention:text")]  # equal means
        lo = kept[-1]
        out.append(f"Text retention (text accuracy after the last stage over the base's, %): highest "
                   f"{', '.join(r.label for r in top)} ({_with_interval(top[0], 'retention:text', 'percent')}"
                   + (", each" if len(top) > 1 else "") + f"), lowest {lo.label} "
                   f"({_with_interval(lo, 'retention:text', 'percent')}).")
    for a, b in pairs:
        pair = _pair(t, a, b)
        if not isinstance(pair, tuple):
            out += [pair] if pair else []
            continue
        ra, rb = pair
        out.append(compare(t, ra.label, rb.label, "acc", alpha, level))
        if any(c.key == "retention:text" for c in t.columns):
            out.append(compare(t, ra.label, rb.label, "retention:text", alpha, level))
        if {a, b} == {"mmer", "lora-per-modality"}:
            out.append(f"Side by side: {ra.label} trains {_with_interval(ra, 'trainable', 'count')} parameters and "
                       f"stores {_with_interval(ra, 'task_weight_bytes', 'bytes')} per task; {rb.label} trains "
                       f"{_with_interval(rb, 'trainable', 'count')} and stores "
                       f"{_with_interval(rb, 'task_weight_bytes', 'bytes')}.")
    return out


def findings_markdown(board: Leaderboard, stream: str = DEFAULT_STREAM) -> str:
    """The findings as a Markdown list (the docs' section between FINDINGS_BEGIN and FINDINGS_END)."""
    lines = findings(board, stream)
    if not lines:
        return f"No finished runs of {stream} yet.\n"
    return "\n".join(f"- {line}" for line in lines) + "\n"
