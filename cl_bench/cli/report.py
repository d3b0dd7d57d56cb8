"""What the result files say: `clbench leaderboard`, `clbench compare` and `clbench plot` (cl_bench.reporting)."""

from __future__ import annotations

from pathlib import Path

import click

from cl_bench import errors
from cl_bench.cli import options as opt
from cl_bench.results import LEADERBOARD_PAGE

PUBLISHED = "results"  # the published leaderboard's directory, which these commands read by default


def results_option(**kw):
    return opt.field_option(opt.RunConfig, "results_dir", default=PUBLISHED, type=click.Path(file_okay=False),
                            help="Directory holding runs/ of result files", **kw)


def stream_filter(f):
    return click.option("--stream", default=None, help="Only this stream [default: every stream found].")(f)


def metrics_device(f):
    return opt.device(help="Where the metrics are computed: auto (the GPU where there is one), cpu, cuda")(f)


def device_name(name: str) -> str:
    from cl_bench.run.device import resolve_device

    return str(resolve_device(name))


def board_of(results_dir, stream, sort, device):
    """The leaderboard of the result files under `results_dir` (skipped files named on stderr); a usage error when
    there are none."""
    from cl_bench.reporting.leaderboard import build

    board = build(results_dir, stream=stream, sort=sort, device=device_name(device))
    for path, why in board.skipped:
        click.echo(f"left out {path}: {why}", err=True)
    if not board.tables:
        raise errors.UsageError(f"no finished result files under {results_dir}/runs; "
                                "run `clbench run` (or `clbench publish`) first")
    return board


def page_option(f):
    """--page FILE (repeatable): pages whose generated sections (leaderboard, findings, scale: reporting.page) are
    rewritten. --readme is its former name, kept so that old commands still parse."""
    return click.option("--page", "--readme", "pages", type=click.Path(dir_okay=False, exists=True), multiple=True,
                        help=f"Also regenerate the generated sections of this page (repeatable), between their "
                             f"markers: leaderboard, findings, scale (the published ones are in {LEADERBOARD_PAGE} "
                             f"and README.md; --readme is this option's former name)."
                        )(f)


def check_page(paths) -> None:
    """Before the runs: each page must have a section's markers, so that a long publish cannot end in that error."""
    from cl_bench.reporting.page import sections_of

    for path in paths or ():
        sections_of(path)


def write_page(paths, board) -> None:
    """Each page's generated sections (reporting.page) from `board`."""
    from cl_bench.reporting.page import regenerate, sections_of
    from cl_bench.results import atomic_write_text

    for path in paths or ():
        names = sections_of(path)
        atomic_write_text(path, regenerate(Path(path).read_text(encoding="utf-8"), board, path))
        click.echo(f"regenerated the {', '.join(names)} section(s) of {path}", err=True)


@click.command()
@results_option()
@stream_filter
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "html"]), default="md", show_default=True,
              help="Table format; csv is long (a line per table, row and column); html is one page with a table of "
                   "contents, linking its figures, drawn into figures/ beside the page (with -o; printed, it has none).")
@click.option("--sort", default="acc", show_default=True,
              help="Column to sort rows by (acc, bwt, fwt, forgetting, intransigence, retention:<task>, trainable, "
                   "added, train_seconds); best first.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of printing.")
@metrics_device
@page_option
def leaderboard(results_dir, stream, fmt, sort, output, device, pages) -> None:
    """Print the leaderboard of every stream: one row per strategy, mean and 95% CI over seeds; one table per stage
    budget (runs of other budgets are never ranked together), and budget curves across them.

    Every metric is recomputed from the result files' accuracy matrices; nothing is
    re-run. Files that are unreadable, of a newer schema or from unfinished runs are
    named on stderr and left out.
    """
    from cl_bench.reporting.leaderboard import render
    from cl_bench.results import atomic_write_text

    check_page(pages)
    board = board_of(results_dir, stream, sort, device)
    figures = None
    if fmt == "html" and output:
        from cl_bench.reporting.figures import draw

        figures = draw(board, Path(output).parent / "figures", device_name(device))
    elif fmt == "html":
        click.echo("the page printed links no figures: with -o PAGE they are drawn into figures/ beside it", err=True)
    text = render(board, fmt, figures)
    write_page(pages, board)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--stream", default=None,
              help=f"Stream of the runs [default: the only stream with runs of both; of several, "
                   f"{opt.field_default(opt.RunConfig, 'stream')}].")
@click.option("--metric", default="acc", show_default=True,
              help="Per-run metric: a leaderboard column (acc, bwt, fwt, forgetting, intransigence, retention:<task>, "
                   "trainable, train_seconds, ...) or a scalar of metrics.all_metrics (text_retention, "
                   "mean_retention, mean_plasticity, fwt_vs_chance).")
@results_option()
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0.5, 1, max_open=True),
              help="Confidence level of the interval; the test's alpha is 1 - level.")
@click.option("--order", default=None, metavar="TASKS",
              help="Compare runs made with this --order of the stream's new tasks (e.g. audio,vision) "
                   "[default: the stream's own order].")
@click.option("--budget", default=None, metavar="BUDGET",
              help="Compare runs of this stage budget: examples per stage (6400) or steps x batch size (200x32) "
                   "[default: the stream's main budget, the default's where it has runs]. Runs of different budgets "
                   "are never compared.")
@metrics_device
def compare(a, b, stream, metric, results_dir, level, order, budget, device) -> None:
    """Compare strategies A and B, paired by seed: is the difference real or a tie?

    A and B are strategy names or leaderboard row labels: a strategy run with several
    options has a row each, and its name picks the row at its defaults. Runs with the
    same seed share the base model, projector init and data order, so the comparison
    uses the difference on each shared seed: its mean and paired-t interval, the paired
    t-test's p-value, the share of seeds A wins, and how many seeds the observed
    difference would need to be detected at 95% and 80% power.
    """
    from cl_bench.analysis import stats
    from cl_bench.reporting.leaderboard import _number, find_row

    board = board_of(results_dir, stream, "acc", device)
    table = _table_of_both(board, a, b, results_dir, order, _budget_examples(budget))
    row_a, row_b = find_row(table, a), find_row(table, b)
    cols = {c.key: c for c in table.columns}
    key = metric if metric in row_a.per_seed else {c.header.lower(): c.key for c in table.columns}.get(
        metric.lower(), metric)
    if key not in row_a.per_seed or key not in row_b.per_seed:
        known = ", ".join(k for k in row_a.per_seed if k in row_b.per_seed)
        raise errors.UsageError(f"no per-run metric {metric!r} for both; choose --metric from: {known}")
    va, vb = row_a.per_seed[key], row_b.per_seed[key]
    shared = sorted(set(va) & set(vb))
    if len(shared) < 2:
        raise errors.UsageError(
            f"{row_a.label} (seeds {_seeds(va)}) and {row_b.label} (seeds {_seeds(vb)}) share {len(shared)} seed(s) "
            f"on {table.stream}; a paired comparison needs at least 2: run the missing seeds with "
            "`clbench run --seed N`")
    col = cols.get(key)
    kind = col.kind if col else "percent" if key.endswith("_retention") else "score"
    res = stats.paired_comparison([va[s] for s in shared], [vb[s] for s in shared], level=level, alpha=1 - level)
    num = lambda v: _number(v, kind) if v >= 0 or kind in ("score", "percent") else f"{v:.3g}"  # noqa: E731
    width = max(len(row_a.label), len(row_b.label), 8) + 2
    click.echo(f"{table.title}: {key} of {row_a.label} (A) and {row_b.label} (B) over {res.n} shared seeds "
               f"({', '.join(map(str, shared))})")
    click.echo(f"  {'seed':<6}{'A':>{width}}{'B':>{width}}{'A - B':>{width}}")
    for s in shared:
        click.echo(f"  {s:<6}{num(va[s]):>{width}}{num(vb[s]):>{width}}{num(va[s] - vb[s]):>{width}}")
    click.echo(f"  {'mean':<6}{num(res.mean_a):>{width}}{num(res.mean_b):>{width}}{num(res.mean_diff):>{width}}")
    click.echo(f"mean difference A - B: {num(res.mean_diff)}, {level:.0%} interval [{num(res.low)}, {num(res.high)}] "
               "(paired t)")
    click.echo(f"paired t-test: p = {res.p_value:.3g} (two-sided)")
    click.echo(f"P(A > B): {res.p_a_better:.2f} (share of shared seeds where A is higher, ties half)")
    click.echo(f"effect size d = {res.effect_size:.3g}; seeds to detect it at alpha {1 - level:.2g}: "
               f"{_needed(res.seeds_95)} at 95% power, {_needed(res.seeds_80)} at 80% power")
    better = "" if col is None or col.higher_is_better is None else \
        " (higher is better)" if col.higher_is_better else " (lower is better)"
    if res.p_value < 1 - level:
        hi, lo = (row_a.label, row_b.label) if res.mean_diff > 0 else (row_b.label, row_a.label)
        click.echo(f"verdict: {hi} > {lo} on {key}{better} (p={res.p_value:.3g})")
    else:
        click.echo(f"verdict: no significant difference: a tie at this number of seeds (p={res.p_value:.3g})")


def _budget_examples(budget: str | None) -> int | None:
    """--budget as examples per stage: "6400" or "200x32"; a usage error otherwise."""
    if budget is None:
        return None
    parts = budget.lower().replace(" ", "").split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise errors.UsageError(f"--budget must be examples per stage (6400) or steps x batch size (200x32), "
                                f"got {budget!r}")
    return int(parts[0]) * (int(parts[1]) if len(parts) == 2 else 1)


def _table_of_both(board, a: str, b: str, results_dir, order: str | None, examples: int | None = None):
    """The table (stream, in `order`, of `examples` per stage or the main budget) to compare A and B on: the only
    one with runs of both, else the default stream's; a usage error naming the streams otherwise."""
    tables = [t for t in board.tables
              if (t.default_order if order is None else ",".join(t.order) == order.replace(" ", ""))
              and (t.main_budget if examples is None else t.examples == examples)]
    if not tables and examples is not None:
        found = ", ".join(sorted({f"{t.stream}: {t.examples} ({t.budget})" for t in board.tables}))
        raise errors.UsageError(f"no runs with {examples} examples per stage under {results_dir}/runs "
                                f"(budgets there: {found})")
    both = [t for t in tables if _has(t, a) and _has(t, b)] if len(tables) > 1 else tables
    if not both:
        found = ", ".join(t.stream for t in tables)
        raise errors.UsageError(f"no stream under {results_dir}/runs has finished runs of both {a!r} and {b!r} "
                                f"(streams: {found}) at one budget; run the missing one with `clbench run`, or "
                                "pick another budget with --budget")
    if len(both) > 1:
        default = [t for t in both if t.stream == opt.field_default(opt.RunConfig, "stream")]
        if not default:
            raise errors.UsageError(f"{a!r} and {b!r} both ran on streams {', '.join(t.stream for t in both)}; "
                                    "pick one with --stream")
        both = default
    return both[0]


def _has(table, name: str) -> bool:
    return any(r.label == name or r.strategy == name for r in table.rows)


def _seeds(values: dict) -> str:
    return ", ".join(map(str, sorted(values))) or "none"


def _needed(n) -> str:
    if n is None:
        return "n/a"
    return "never (no difference observed)" if n == float("inf") else str(n)


@click.command()
@results_option()
@stream_filter
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Where the figures go [default: RESULTS_DIR/figures, beside the result files read].")
@metrics_device
def plot(results_dir, stream, out_dir, device) -> None:
    """Draw the figures: per strategy, heatmaps of the accuracy and transfer matrices (each run and the mean);
    per stream, forgetting curves and Pareto plots of ACC against trainable parameters and train time; for a stream
    run at several budgets, budget curves (ACC and text retention against examples per stage and training FLOPs).
    """
    from cl_bench.reporting.figures import draw

    board = board_of(results_dir, stream, "acc", device)
    out = Path(out_dir) if out_dir else Path(results_dir) / "figures"
    figures = draw(board, out, device_name(device))
    for stream_name, figs in figures.items():
        click.echo(f"{out / stream_name}: {len(figs)} figures")


COMMANDS = [leaderboard, compare, plot]
