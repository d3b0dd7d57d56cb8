"""The docs' leaderboard section (docs/leaderboard.md): per stream the columns a reader compares first, spliced
between markers.

The full table is in results/leaderboard.md (formats.to_markdown); this is its summary, one of a page's generated
sections (reporting.page). The module keeps its name and its README_* names from when the section was in the README.
"""

from __future__ import annotations

from cl_bench.reporting.formats import cell, matrix_table, md_text, order_effects_markdown, table_notes
from cl_bench.reporting.tables import Leaderboard
from cl_bench.results import LEADERBOARD_PAGE

# The page's summary: the columns a reader compares first (the full table is in results/leaderboard.md).
README_COLUMNS = ("group", "acc", "bwt", "forgetting", "intransigence", "retention:text", "budget_ratio", "past_train",
                  "past_val", "declares", "trainable", "step_seconds", "seeds")
README_BEGIN = f"<!-- leaderboard:begin (clbench publish --page {LEADERBOARD_PAGE}) -->"
README_END = "<!-- leaderboard:end -->"


def readme_section(board: Leaderboard, level: float = 0.95) -> str:
    """The docs' leaderboard section: per stream (and order), the README_COLUMNS of its main budget's table, the
    note, the matrices; the other budgets' tables are in the full leaderboard, named under it."""
    out = []
    for t in board.tables:
        if not t.main_budget:
            continue
        cols = [c for k in README_COLUMNS for c in t.columns if c.key == k]
        out.append(f"**{t.title}** (tasks: " + ", ".join(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f}, "
                                                          f"{x.get('n_test', '?')} test items)" for x in t.tasks)
                   + ")\n")
        out.append("| Strategy | " + " | ".join(c.header for c in cols) + " |")
        out.append("|---|" + "|".join("---:" for _ in cols) + "|")
        for r in t.rows:
            out.append(f"| {md_text(r.label)} | " + " | ".join(cell(r, c) for c in cols) + " |")
        out.append("")
        out += [note + "\n" for note in table_notes(t, level)]
        out += matrix_table(t)
        others = [o.title for o in board.tables if o.stream_slug == t.stream_slug and not o.main_budget]
        if others:
            out.append(f"Other budgets, in the full leaderboard with the budget curves: {'; '.join(others)}.\n")
    out += order_effects_markdown(board, heading="**Order effects**")
    return "\n".join(out).rstrip() + "\n"
