"""The leaderboard written out: Markdown, CSV (long format), LaTeX and one HTML page that links its figures.

Writing only: every number comes computed in the board's rows (leaderboard.build, from cl_bench.analysis); here
it is formatted, with its interval, into a cell.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Iterable, Mapping

from cl_bench.analysis import stats
from cl_bench.errors import UsageError
from cl_bench.reporting.tables import (
    BudgetCurves,
    Column,
    Leaderboard,
    Row,
    ScaleTable,
    Table,
    budget_ratio,
    order_effects,
    slug,
)

FORMATS = ("md", "csv", "latex", "html")


def number(v: float, kind: str) -> str:
    """A value as a cell shows it, by its column's kind (score, percent, count, seconds, ...); "n/a" for NaN."""
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
    return interval_text(mean, low, high, col.kind, pm)


def interval_text(mean: float, low: float, high: float, kind: str, pm: str = " ") -> str:
    """"0.567 [0.467, 0.667]": the mean, then its interval where there is one and it is not a point."""
    text = number(mean, kind)
    if not math.isnan(mean) and not math.isnan(low) and kind != "int" and not (
            kind in ("count", "ratio", "bytes") and low == high):
        text += f"{pm}[{number(low, kind)}, {number(high, kind)}]"
    return text


def _curves_after(board: Leaderboard) -> dict[int, list[BudgetCurves]]:
    """The budget curves of each stream (and order), keyed by the index of its last table: they follow it."""
    last = {t.stream_slug: i for i, t in enumerate(board.tables)}
    out: dict[int, list[BudgetCurves]] = {}
    for c in board.curves:
        out.setdefault(last.get(c.slug, len(board.tables) - 1), []).append(c)
    return out


def to_markdown(board: Leaderboard, level: float = 0.95) -> str:
    out = []
    after = _curves_after(board)
    for i, t in enumerate(board.tables):
        out.append(f"## {t.title}\n")
        out.append(f"Mean [{level:.0%} interval] over seeds. Tasks: "
                   + ", ".join(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f})" for x in t.tasks) + ".\n")
        out.append("| Strategy | " + " | ".join(c.header for c in t.columns) + " |")
        out.append("|---|" + "|".join("---:" for _ in t.columns) + "|")
        for r in t.rows:
            out.append(f"| {md_text(r.label)} | " + " | ".join(cell(r, c) for c in t.columns) + " |")
        out.append("")
        out += [note + "\n" for note in table_notes(t, level)]
        out += matrix_table(t)
        for s in board.scale:
            if s.slug == t.slug:
                out += scale_markdown(s, level)
        for c in after.get(i, []):
            out += budget_curves_markdown(c, level)
    out += order_effects_markdown(board)
    out += _skipped_lines(board)
    return "\n".join(out).rstrip() + "\n"


# -- budget curves ---------------------------------------------------------------------------------
def budget_curves_table(c: BudgetCurves) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a stream's budget curves: each strategy's ACC and retention at every budget ("-" where it
    did not run), then its retention at the matched new-task accuracy."""
    ret = f"{c.retention_name.capitalize()} ret. %"
    header = ["Strategy"]
    for examples, given in c.budgets:
        where = f"{given} ({budget_ratio(examples)})"
        header += [f"ACC, {where}", f"{ret}, {where}"]
    header.append(f"{ret} at new-task acc. {c.target:.3f}" if c.target is not None else f"{ret} at matched acc.")
    rows = []
    for curve in c.curves:
        cells = [curve.label]
        for examples, _ in c.budgets:
            p = curve.at(examples)
            cells += ["-", "-"] if p is None else [
                interval_text(p.acc, p.acc_low, p.acc_high, "score"),
                interval_text(p.retention, p.retention_low, p.retention_high, "percent")]
        matched = c.matched.get(curve.label)
        cells.append("n/a" if matched is None else number(matched, "percent"))
        rows.append(cells)
    return header, rows


def budget_curves_notes(c: BudgetCurves, level: float = 0.95) -> list[str]:
    """What the budget-curves table shows, and how the matched accuracy is found."""
    name = c.retention_name
    target = ("no strategy has two budgets with a defined new-task accuracy" if c.target is None else
              f"{c.target:.3f}, the highest that every strategy here reaches")
    what = ("Budget curves: each strategy (the same options, whatever its step count) at every budget of this "
            "stream that it ran, a budget being the training examples per stage (steps x batch size, all phases "
            f"together); ACC and {name} retention as in the budgets' own tables, mean [{level:.0%} interval] over "
            "seeds; '-' where it did not run at that budget. Strategies run at one budget only are not shown. "
            "Strategies are ranked and grouped only within a budget's table, never across budgets.")
    matched = (f"Matched accuracy: {name} retention where a strategy's new-task accuracy (the mean over the new "
               f"tasks of R[j, j], each task's accuracy right after its own stage) reaches {target}; linearly "
               "interpolated between the two budgets whose new-task accuracies bracket it (the first such pair by "
               "budget), never extrapolated: n/a where no two of a strategy's budgets bracket it (already above it "
               "at its smallest).")
    return [what, matched]


PAIRS_HEADER = ("Examples per stage", "A", "A ACC", "A ret. %", "B", "B ACC", "B ret. %")


def recipe_pairs_table(c: BudgetCurves) -> tuple[str, list[list[str]]]:
    """(note, rows under PAIRS_HEADER) of a stream's matched recipes; no rows where no pair ran."""
    note = (f"Matched recipes: strategies whose stages are spent alike (leaderboard.RECIPE_PAIRS: MoExtend's phases "
            "against full fine-tuning with an alignment phase of the same share), side by side where both saw the "
            f"same training examples per stage, all phases together; ACC and {c.retention_name} retention %, mean "
            "[interval] over seeds.")
    rows = []
    for pair in c.pairs:
        line = [f"{pair.examples:,.0f}"]
        for label, p in (pair.a, pair.b):
            line += [label, interval_text(p.acc, p.acc_low, p.acc_high, "score"),
                     interval_text(p.retention, p.retention_low, p.retention_high, "percent")]
        rows.append(line)
    return note, rows


def budget_curves_markdown(c: BudgetCurves, level: float = 0.95) -> list[str]:
    out = [f"## {c.title}: budget curves\n"]
    if c.curves:
        header, rows = budget_curves_table(c)
        out += ["| " + " | ".join(map(md_text, header)) + " |", "|---|" + "|".join("---:" for _ in header[1:]) + "|",
                *("| " + " | ".join(map(md_text, r)) + " |" for r in rows), ""]
        out += [note + "\n" for note in budget_curves_notes(c, level)]
    note, pairs = recipe_pairs_table(c)
    if pairs:
        out += [note + "\n", "| " + " | ".join(PAIRS_HEADER) + " |", "|---:|---|---:|---:|---|---:|---:|",
                *("| " + " | ".join(map(md_text, r)) + " |" for r in pairs), ""]
    return out


# -- scale ------------------------------------------------------------------------------------------
def _size(s: ScaleTable, model: str) -> str:
    p = s.parameters.get(model)
    return model if p is None else f"{model} ({number(float(p), 'count')})"


def scale_table(s: ScaleTable) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a table's strategies at each model size: ACC [interval] per size, "-" where it did not
    run at that size."""
    header = ["Strategy", *(f"ACC, {_size(s, m)}" for m in s.models)]
    rows = [[r.label, *("-" if m not in r.acc else interval_text(*r.acc[m], "score") for m in s.models)]
            for r in s.rows]
    return header, rows


SCALE_AGREEMENT_HEADER = ("Sizes", "Strategies", "Kendall's tau [interval]", "Pairs that flip")


def scale_agreement_table(s: ScaleTable) -> list[list[str]]:
    """A row per pair of sizes under SCALE_AGREEMENT_HEADER: tau, its interval, the pairs ranked the other way."""
    rows = []
    for a, b, g in s.agreement:
        tau = "n/a" if math.isnan(g.tau) else f"{g.tau:.2f}" + (
            "" if math.isnan(g.low) else f" [{g.low:.2f}, {g.high:.2f}]")
        flips = "; ".join(f"{x} > {y} at {a}, {y} > {x} at {b}" for x, y in g.flips) or "none"
        rows.append([f"{a} vs {b}", str(len(g.strategies)), tau, flips])
    return rows


def scale_notes(s: ScaleTable, level: float = 0.95) -> str:
    from cl_bench.analysis.rank_agreement import N_RESAMPLES

    return (f"Scale: the strategies of this table at each model size its runs have (config.model; parameters of "
            f"the base LM as its runs record them), ACC mean [{level:.0%} interval] over seeds as above. Kendall's "
            f"tau (scipy.stats.kendalltau, tau-b) between two sizes' rankings by mean ACC, over the strategies run "
            f"at both; its interval is a percentile bootstrap over seeds ({N_RESAMPLES:,} resamples, each "
            "strategy's seeds drawn with replacement at each size, both rankings recomputed), clipped to [-1, 1]. "
            "A pair flips when the two sizes rank it strictly opposite ways.")


def scale_markdown(s: ScaleTable, level: float = 0.95) -> list[str]:
    header, rows = scale_table(s)
    return [f"### {s.title}: scale\n",
            "| " + " | ".join(map(md_text, header)) + " |", "|---|" + "|".join("---:" for _ in header[1:]) + "|",
            *("| " + " | ".join(map(md_text, r)) + " |" for r in rows), "",
            "| " + " | ".join(SCALE_AGREEMENT_HEADER) + " |", "|---|---:|---:|---|",
            *("| " + " | ".join(map(md_text, r)) + " |" for r in scale_agreement_table(s)), "",
            scale_notes(s, level) + "\n"]


def _html_scale(s: ScaleTable, level: float) -> list[str]:
    header, rows = scale_table(s)
    return [f"<h3>{html.escape(s.title)}: scale</h3>", _html_simple_table(header, rows),
            _html_simple_table(SCALE_AGREEMENT_HEADER, scale_agreement_table(s)),
            f"<p class='note'>{html.escape(scale_notes(s, level))}</p>"]


def matrix_table(t: Table) -> list[str]:
    """Each row's mean accuracy matrix, one column per stage, tasks in stream order within a cell."""
    names = [x["name"] for x in t.tasks]
    stages = ["base"] + [f"after {n}" for n in names[1:]]
    out = [f"Mean accuracy matrix R[stage, task] over seeds; each cell lists {' / '.join(names)}.\n",
           "| Strategy | " + " | ".join(stages) + " |", "|---|" + "|".join("---" for _ in stages) + "|"]
    for r in t.rows:  # r.matrix: [stages, tasks]
        out.append(f"| {md_text(r.label)} | " + " | ".join(" / ".join(f"{a:.3f}" for a in row) for row in r.matrix)
                   + " |")
    return out + [""]


def _skipped_lines(board: Leaderboard) -> list[str]:
    if not board.skipped:
        return []
    return ["Left out:", *[f"- {p}: {why}" for p, why in board.skipped], ""]


CSV_HEADER = ("stream", "order", "examples_per_stage", "main_budget", "strategy", "label", "column", "header",
              "value", "low", "high", "method")


def to_csv(board: Leaderboard, level: float = 0.95) -> str:
    """Long format: one line per table, row and column (CSV_HEADER), so that every value sits under its own name
    whatever the table's columns (tables of different streams have different ones). `value` is the mean over
    seeds (or the text of a text column), `low` and `high` its interval where it has one; `method` says how the
    table's intervals and groups were made."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for t in board.tables:
        method = " ".join(table_notes(t, level))
        head = [t.stream, " > ".join(t.order), str(t.examples), "yes" if t.main_budget else "no"]
        for r in t.rows:
            for c in t.columns:
                if c.kind == "text":
                    value, low, high = r.text.get(c.key, ""), "", ""
                else:
                    mean = r.values.get(c.key, (float("nan"), float("nan")))[0]
                    lo, hi = r.ci.get(c.key, (float("nan"), float("nan")))
                    value, low, high = _raw(mean), *(("", "") if c.kind == "int" else (_raw(lo), _raw(hi)))
                w.writerow([*head, r.strategy, r.label, c.key, c.header, value, low, high, method])
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
        out += [f"% {t.title}: mean [95% interval] over seeds", *(f"% {note}" for note in table_notes(t)),
                r"\begin{tabular}{l" + "r" * len(t.columns) + "}",
                r"\toprule", "Strategy & " + " & ".join(esc(c.header) for c in t.columns) + r" \\", r"\midrule"]
        for r in t.rows:
            out.append(esc(r.label) + " & " + " & ".join(cell(r, c) for c in t.columns) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


def to_html(board: Leaderboard, figures: Mapping[str, Iterable[str]] | None = None, level: float = 0.95,
            figures_dir: str = "figures") -> str:
    """One page, the default stream first, a table of contents at the top: per stream the table (click a header
    to sort), the mean accuracy matrices, then its figures. The figures are linked, not inlined (the page stays
    small): `figures` names them per table slug ({slug: [file name, ...]}, as figures.draw writes them under
    figures_dir/<slug>/), `figures_dir` is that folder relative to the page. No style, script or font is fetched."""
    figures = figures or {}
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>clbench leaderboard</title><style>{_HTML_STYLE}</style></head><body>",
             "<h1>clbench leaderboard</h1>"]
    after = _curves_after(board)
    body, contents = [], []
    for i, t in enumerate(board.tables):
        body.append(f"<h2 id='{slug(t.slug)}'>{html.escape(t.title)}</h2>")
        entry = [f"<li><a href='#{slug(t.slug)}'>{html.escape(t.title)}</a>"]
        body.append(f"<p>Mean [{level:.0%} interval] over seeds. Tasks: "
                    + ", ".join(html.escape(f"{x['name']} ({x['modality']}, chance {x['chance']:.3f})")
                                for x in t.tasks) + ". Click a column's header to sort by it.</p>")
        body.append(_html_table(t))
        body += [f"<p class='note'>{html.escape(note)}</p>" for note in table_notes(t, level)]
        body.append(_html_matrix_table(t))
        for sc in board.scale:
            if sc.slug == t.slug:
                body += _html_scale(sc, level)
        body += _html_figures(f"{figures_dir}/{t.slug}", [n for n in figures.get(t.slug, ())
                                                           if not n.startswith(BUDGET_FIGURE_PREFIX)])
        sub = []
        for c in after.get(i, []):
            anchor = slug(f"{c.slug}--budget-curves")
            body += _html_budget_curves(c, anchor, f"{figures_dir}/{c.slug}", figures.get(c.slug, ()), level)
            sub.append(f"<li><a href='#{anchor}'>{html.escape(c.title)}: budget curves</a></li>")
        contents.append("".join(entry) + (f"<ul>{''.join(sub)}</ul>" if sub else "") + "</li>")
    note, rows = order_effects_table(board)
    if rows:
        body.append(f"<h2 id='order-effects'>Order effects</h2><p>{html.escape(note)}</p><div class='scroll'><table>"
                    "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in ORDER_EFFECTS_HEADER)
                    + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                    + "</tbody></table></div>")
        contents.append("<li><a href='#order-effects'>Order effects</a></li>")
    if board.skipped:
        body.append("<h2 id='left-out'>Left out</h2><ul>" + "".join(
            f"<li>{html.escape(str(p))}: {html.escape(why)}</li>" for p, why in board.skipped) + "</ul>")
        contents.append("<li><a href='#left-out'>Left out</a></li>")
    parts.append(f"<nav><h2>Contents</h2><ul>{''.join(contents)}</ul></nav>")
    parts += body
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


BUDGET_FIGURE_PREFIX = "budget-curves"  # the budget curves' figures (figures.render_figures): in their section


def _html_simple_table(header, rows) -> str:
    return ("<div class='scroll'><table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
            + "</tbody></table></div>")


def _html_budget_curves(c: BudgetCurves, anchor: str, folder: str, names: Iterable[str],
                        level: float) -> list[str]:
    """A stream's budget curves as budget_curves_markdown writes them, then their figures (under `folder`)."""
    out = [f"<h2 id='{anchor}'>{html.escape(c.title)}: budget curves</h2>"]
    if c.curves:
        header, rows = budget_curves_table(c)
        out.append(_html_simple_table(header, rows))
        out += [f"<p class='note'>{html.escape(note)}</p>" for note in budget_curves_notes(c, level)]
    note, pairs = recipe_pairs_table(c)
    if pairs:
        out += [f"<p>{html.escape(note)}</p>", _html_simple_table(PAIRS_HEADER, pairs)]
    return out + _html_figures(folder, [n for n in names if n.startswith(BUDGET_FIGURE_PREFIX)])


def _html_figures(folder: str, names: list[str]) -> list[str]:
    """The stream's figures first (full width), then each strategy's, two side by side where they fit; each an
    <img> of the file folder/name (loaded lazily: a stream has a few dozen)."""
    from urllib.parse import quote

    def figure(name: str) -> str:
        return (f"<figure><img alt='{html.escape(name)}' title='click to see it at full size' loading='lazy' "
                f"src='{html.escape(quote(f'{folder}/{name}'))}'><figcaption>{html.escape(name)}</figcaption>"
                "</figure>")

    per_row = [n for n in names if n.endswith(("-accuracy.png", "-transfer.png", "-routing.png"))]
    out = [figure(n) for n in names if n not in per_row]
    if per_row:
        out.append("<h3>Per strategy: accuracy and transfer matrices, routing</h3><div class='figs'>"
                   + "".join(figure(n) for n in per_row) + "</div>")
    return out


def render(board: Leaderboard, fmt: str, figures: Mapping[str, Iterable[str]] | None = None,
           figures_dir: str = "figures") -> str:
    """The board in format `fmt` (one of FORMATS); the HTML page links `figures` ({table slug: file names}, as
    figures.draw returns them) under `figures_dir`, relative to the page."""
    if fmt == "md":
        return to_markdown(board)
    if fmt == "csv":
        return to_csv(board)
    if fmt == "latex":
        return to_latex(board)
    if fmt == "html":
        return to_html(board, figures, figures_dir=figures_dir)
    raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


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


def md_text(text: str) -> str:
    """A Markdown table cell's text: a | inside (e.g. in an option's value) would end the cell."""
    return str(text).replace("|", "\\|")


def order_effects_markdown(board: Leaderboard, heading: str = "## Order effects") -> list[str]:
    note, rows = order_effects_table(board)
    if not rows:
        return []
    return [f"{heading}\n", note + "\n", "| " + " | ".join(ORDER_EFFECTS_HEADER) + " |",
            "|---|---|---|---:|---:|---|---:|---|", *("| " + " | ".join(map(md_text, r)) + " |" for r in rows), ""]


def table_notes(t: Table, level: float = 0.95) -> list[str]:
    """The notes under a table: what its Group letters mean (grouping.Grouping.rule), then its intervals."""
    return ([t.groups.rule()] if t.groups is not None else []) + [interval_note(level)]


def interval_note(level: float = 0.95) -> str:
    """What the intervals are, for the note under each table."""
    return (f"Intervals: mean [{level:.0%} interval] over seeds, an expanded percentile bootstrap of the mean "
            f"(scipy.stats.bootstrap, {stats.N_RESAMPLES:,} resamples, seed {stats.SEED}), inside the seeds' range "
            "and so inside the metric's. An interval inside n seeds' range covers a symmetric spread's mean at most "
            "1 - 2^(1-n) of the time (94% at 5 seeds): compare strategies by their Group letters or with "
            "`clbench compare`.")
