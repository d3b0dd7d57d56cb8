"""Figures from result files (matplotlib, headless): nothing is re-run.

Per strategy (one row of the leaderboard): heatmaps of the accuracy matrix and of the
normalised transfer matrix, one panel per run and one for the mean over runs; for MoE
models, the routing analysis (which experts each task's tokens go to, after every stage).
Per stream: forgetting curves (each task's accuracy across stages, one line per
strategy with its confidence interval at every stage) and Pareto plots of ACC against
trainable parameters and against training time; for a stream run at several stage budgets,
budget curves (ACC and text retention against examples per stage and against training FLOPs).

Every strategy has one colour, marker and line style (`style`), the same in every figure.
Drawing only: every number is computed in cl_bench.analysis (intervals: stats.bootstrap_ci, the leaderboard's
own, between the smallest and the largest seed's value, so never outside the metric's range; the Pareto front:
grouping.pareto_front; the transfer matrix: metrics.transfer_matrix).
Each figure is built by a `*_figure` function that returns the matplotlib Figure (for
tests to inspect) and encoded to PNG by the function of the same name without `_figure`.
"""

from __future__ import annotations

import io
import math
import zlib
from pathlib import Path

import numpy as np

from cl_bench.analysis import stats
from cl_bench.analysis.grouping import pareto_front
from cl_bench.reporting.tables import BudgetCurves, Leaderboard, Row, Table, slug

DPI = 110

# One colour, marker and line style per built-in strategy: fixed, so that a strategy looks the
# same in every figure and in every leaderboard, whatever the other rows are. Colours are
# tab10's plus black and navy (every pair at least 27 CIELAB units apart); related strategies
# (lora / lora-per-modality, adapter / adapter-per-modality) get different hues and line styles.
_BUILTIN_STYLES: dict[str, tuple[str, str, object]] = {
    "mmer": ("#d62728", "o", "-"),
    "joint": ("#000000", "s", (0, (5, 2))),
    "full-ft": ("#8c564b", "v", "-"),
    "align-only": ("#7f7f7f", "^", (0, (1, 1.5))),
    "lora": ("#2ca02c", "D", "-"),
    "lora-per-modality": ("#17becf", "P", (0, (5, 2))),
    "adapter": ("#9467bd", "X", "-"),
    "adapter-per-modality": ("#e377c2", "*", (0, (5, 2))),
    "moextend": ("#ff7f0e", "h", (0, (3, 1, 1, 1))),
    "ewc": ("#1f77b4", "<", (0, (3, 1, 1, 1))),
    "lwf": ("#bcbd22", ">", (0, (1, 1.5))),
    "replay": ("#0b3d91", "p", (0, (5, 1, 1, 1, 1, 1))),
}
# Other strategies (plugins): a colour and marker chosen by a hash of the name (stable across runs
# and machines), from colours unlike the built-ins'.
_EXTRA_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
                 "#756bb1", "#636363", "#b5cf6b", "#e7ba52")
_EXTRA_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "p", "<", ">")
_LINESTYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (3, 1, 1, 1)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def style(strategy: str) -> tuple[str, str, object]:
    """(colour, marker, line style) of a strategy: fixed for the built-ins, by a stable hash otherwise."""
    if strategy in _BUILTIN_STYLES:
        return _BUILTIN_STYLES[strategy]
    h = zlib.crc32(strategy.encode())
    return (_EXTRA_COLORS[h % len(_EXTRA_COLORS)], _EXTRA_MARKERS[(h >> 8) % len(_EXTRA_MARKERS)],
            _LINESTYLES[(h >> 16) % len(_LINESTYLES)])


def _row_styles(rows: list[Row]) -> list[tuple[str, str, object]]:
    """Each row's style; rows of one strategy with other options keep its colour and marker and
    take the next line style, so that they stay apart."""
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        color, marker, ls = style(r.strategy)
        k = seen.get(r.strategy, 0)
        seen[r.strategy] = k + 1
        if k:
            ls = _LINESTYLES[(_LINESTYLES.index(ls) + k if ls in _LINESTYLES else k) % len(_LINESTYLES)]
        out.append((color, marker, ls))
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _matrices(row: Row, device: str):
    import torch

    return torch.tensor([r.doc["accuracy_matrix"] for r in row.runs], dtype=torch.float64, device=device)


def _row_interval(row: Row, key: str, lower: float = -math.inf,
                  upper: float = math.inf) -> tuple[float, float, float]:
    """(mean, low, high) of a leaderboard column: the row's own interval (Row.ci), clipped to [lower, upper]."""
    if key not in row.values or key not in row.ci:
        return math.nan, math.nan, math.nan
    lo, hi = (float(np.clip(v, lower, upper)) for v in row.ci[key])
    return row.values[key][0], lo, hi


# -- heatmaps ----------------------------------------------------------------------------
def matrix_heatmaps_figure(row: Row, table: Table, kind: str = "accuracy", device: str = "cpu"):
    """One panel per run and one for the mean: R[i, j] (kind="accuracy") or the transfer matrix M[i, j].

    The transfer matrix uses a diverging colour scale centred on zero (white: no change; red:
    below the reference, -1 is chance; blue: above it), symmetric and wide enough for every value.
    Above the diagonal it holds a task's accuracy before the stage that learns it, which is no
    forgetting: those cells are hatched grey, off the colour scale, with their value in grey.
    """
    import torch
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    from cl_bench.analysis import metrics

    plt = _pyplot()
    R = _matrices(row, device)  # [runs, T+1, T+1]
    if kind == "accuracy":
        mats = R
    elif kind == "transfer":
        chance = torch.tensor([t["chance"] for t in table.tasks], dtype=torch.float64, device=R.device)
        mats = metrics.transfer_matrix(R, chance=chance)
    else:
        raise ValueError(f"kind must be 'accuracy' or 'transfer', got {kind!r}")
    mats = mats.cpu().numpy()
    panels = [(f"seed {r.unit}", mats[i]) for i, r in enumerate(row.runs)]
    if len(panels) > 1:
        panels.append((f"mean of {len(panels)}", stats.mean_over_seeds(mats)))
    names = [t["name"] for t in table.tasks]
    n = len(names)
    stages = ["base"] + [f"after {x}" for x in names[1:]]
    future = np.triu(np.ones((n, n), dtype=bool), k=1)  # task j not learned yet at stage i
    if kind == "accuracy":
        cmap, norm = plt.get_cmap("viridis").with_extremes(bad="#d0d0d0"), Normalize(0.0, 1.0)
    else:
        shown = np.stack([m for _, m in panels])[:, ~future]
        top = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
        top = max(1.0, math.ceil(top * 4) / 4)  # symmetric, and every value on the scale
        cmap, norm = plt.get_cmap("RdBu").with_extremes(bad="#d0d0d0"), TwoSlopeNorm(0.0, -top, top)
    width = 2.6 * len(panels) + 1.4
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 2.9), squeeze=False, dpi=DPI)
    fig.subplots_adjust(left=0.9 / width, right=1 - 1.2 / width, bottom=0.2, top=0.8, wspace=0.12)
    image = None
    for k, (ax, (title, m)) in enumerate(zip(axes[0], panels)):
        masked = np.ma.masked_invalid(np.where(future, 0.0, m) if kind == "transfer" else m)
        image = ax.imshow(masked, cmap=cmap, norm=norm, aspect="auto")
        if kind == "transfer":  # before the task is learned: hatched grey, off the colour scale
            for i, j in zip(*np.nonzero(future)):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#ececec", edgecolor="#c4c4c4",
                                       hatch="///", lw=0))
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                text = "n/a" if not np.isfinite(v) else f"{v:.2f}".replace("-0.00", "0.00")
                if kind == "transfer" and future[i, j]:
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color="#666666", style="italic")
                    continue
                rgb = cmap(norm(v))[:3] if np.isfinite(v) else (0.9, 0.9, 0.9)
                light = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 0.45
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if light else "white")
        ax.set_xticks(range(n), names, fontsize=8)
        ax.set_yticks(range(n), stages if k == 0 else [""] * n, fontsize=8)
        ax.tick_params(length=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("task", fontsize=8)
    cbar = fig.colorbar(image, cax=fig.add_axes((1 - 1.05 / width, 0.2, 0.12 / width, 0.6)))
    cbar.ax.tick_params(labelsize=8)
    if kind == "accuracy":
        what = "accuracy R[i, j] (row: after stage i; column: task j)"
    else:
        what = ("transfer (R - R_ref) / (R_ref - chance): 0 no change, -1 back to chance "
                "(hatched, above the diagonal: before the task is learned)")
    fig.suptitle(f"{table.title} / {row.label}: {what}", fontsize=9)
    return fig


def matrix_heatmaps(row: Row, table: Table, kind: str = "accuracy", device: str = "cpu") -> bytes:
    return _png(matrix_heatmaps_figure(row, table, kind, device))


# -- routing ------------------------------------------------------------------------------
def has_routing(row: Row) -> bool:
    """Whether every run of the row has a routing analysis after every stage, all of one layout (the same MoE
    layers, with as many experts of the model's own), so that routing_figure can average them."""
    rows = [r for run in row.runs for r in ((run.doc.get("routing") or {}).get("rows") or [None])]
    if not all(rows):
        return False
    return len({(tuple(r["layers"]), max((st.count(-1) for st in r["expert_stage"]), default=0)) for r in rows}) == 1


def routing_figure(row: Row, table: Table):
    """Per task (rows of panels) and after each stage (columns): the share of the task's test tokens
    that each MoE layer routes to each expert, mean over runs. Experts a strategy added (MoExtend)
    are summed per stage that added them ("+vision"), so that runs extending different layers
    average; 0 where a run added none to that layer.
    """
    from cl_bench.models.routing import grouped_shares

    plt = _pyplot()
    names = [t["name"] for t in table.tasks]
    n_new = len(names) - 1
    per_run = []  # [runs, stages, tasks, layers, columns]
    for run in row.runs:
        rows = run.doc["routing"]["rows"]
        per_run.append(np.stack([np.stack([grouped_shares(r["shares"][t], r["expert_stage"], n_new).numpy()
                                           for t in names]) for r in rows]))
    shares = stats.mean_over_seeds(np.stack(per_run))  # [stages, tasks, layers, columns]
    layers = row.runs[0].doc["routing"]["rows"][0]["layers"]
    n_orig = shares.shape[-1] - n_new
    # a column per stage that added experts in any run, even where no token reached them
    added = np.array([any(s in st for run in row.runs for r in run.doc["routing"]["rows"] for st in r["expert_stage"])
                      for s in range(n_new)], dtype=bool)
    keep = list(range(n_orig)) + [n_orig + s for s in range(n_new) if added[s]]
    columns = [f"e{e}" for e in range(n_orig)] + [f"+{names[s + 1]}" for s in range(n_new) if added[s]]
    stages = ["base"] + [f"after {x}" for x in names[1:]]
    n_t, n_s = len(names), len(stages)
    fig, axes = plt.subplots(n_t, n_s, figsize=(1.0 + 0.42 * len(keep) * n_s + 0.9, 0.9 + 0.3 * len(layers) * n_t + 0.6),
                             squeeze=False, dpi=DPI)
    vmax = max(0.5, float(shares.max()))
    image = None
    for ti, task in enumerate(names):
        for si, stage in enumerate(stages):
            ax = axes[ti][si]
            m = shares[si, ti][:, keep]
            image = ax.imshow(m, cmap="magma", vmin=0.0, vmax=vmax, aspect="auto")
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    ax.text(j, i, f"{m[i, j]:.2f}"[1:] if m[i, j] < 1 else "1", ha="center", va="center",
                            fontsize=6, color="white" if m[i, j] < 0.6 * vmax else "black")
            if len(keep) > n_orig:  # the added experts, right of a line
                ax.axvline(n_orig - 0.5, color="#2ca02c", lw=1.5)
            ax.set_xticks(range(len(keep)), columns if ti == n_t - 1 else [""] * len(keep), fontsize=7,
                          rotation=90 if len(keep) > 10 else (45 if len(keep) > n_orig else 0),
                          ha="right" if n_orig < len(keep) <= 10 else "center")
            ax.set_yticks(range(len(layers)), [f"layer {x}" for x in layers] if si == 0 else [""] * len(layers),
                          fontsize=7)
            ax.tick_params(length=0)
            if ti == 0:
                ax.set_title(stage, fontsize=8)
            if si == 0:
                ax.set_ylabel(task, fontsize=8)
    fig.colorbar(image, ax=axes, fraction=0.025, pad=0.02).ax.tick_params(labelsize=7)
    fig.suptitle(f"{table.title} / {row.label}: share of each task's tokens routed to each expert (top-k), "
                 f"mean of {len(row.runs)} run(s)", fontsize=9)
    return fig


def routing(row: Row, table: Table) -> bytes:
    return _png(routing_figure(row, table))


# -- forgetting curves -------------------------------------------------------------------
def forgetting_curves_figure(table: Table, device: str = "cpu", level: float = 0.95):
    """Each task's accuracy after every stage, one line per strategy: the mean over seeds and its
    bootstrap interval at every stage. Points are dodged sideways, one slot per strategy, and every
    strategy has its own marker and line style, so that equal values stay visible."""
    plt = _pyplot()
    tasks, rows = table.tasks, table.rows
    styles = _row_styles(rows)
    stages = np.arange(len(tasks), dtype=np.float64)
    width = 4.2 * len(tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(width + 2.2, 4.8), squeeze=False, sharey=True, dpi=DPI)
    fig.subplots_adjust(left=0.6 / (width + 2.2), right=(width + 0.1) / (width + 2.2), bottom=0.16, top=0.84,
                        wspace=0.08)
    slot = min(0.06, 0.66 / max(len(rows), 1))
    for ax, (j, task) in zip(axes[0], enumerate(tasks)):
        for i, (row, (color, marker, ls)) in enumerate(zip(rows, styles)):
            acc = _matrices(row, device)[:, :, j].cpu().numpy()  # [runs, stages]
            mean, lo, hi = stats.column_intervals(acc, level, lower=0.0, upper=1.0)
            x = stages + (i - (len(rows) - 1) / 2) * slot
            ok = ~np.isnan(lo)
            if ok.any():
                ax.vlines(x[ok], lo[ok], hi[ok], color=color, lw=1.0, alpha=0.55, zorder=2)
            ax.plot(x, mean, color=color, marker=marker, ms=5.5, ls=ls, lw=1.3, label=row.label, zorder=3,
                    markerfacecolor=_tint(color, 0.35), markeredgewidth=1.0)
        ax.axhline(task["chance"], color="grey", ls=":", lw=1, zorder=1)
        if j > 0:
            ax.axvline(j, color="grey", ls="--", lw=0.8, zorder=1)  # the stage that learns this task
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.5, len(tasks) - 0.5)
        ax.set_title(f"{task['name']} ({task['modality']})", fontsize=10)
        ax.set_xticks(stages, ["base"] + [t["name"] for t in tasks[1:]], fontsize=8)
        ax.set_xlabel("after stage")
        ax.grid(axis="y", color="#eeeeee", lw=0.6, zorder=0)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.03, 0.5), handlelength=3)
    fig.suptitle(f"{table.title}: accuracy of each task across stages, mean over seeds and {level:.0%} bootstrap "
                 "interval (bars)\npoints dodged sideways; dotted: chance; dashed: the stage that learns the task",
                 fontsize=9)
    return fig


def forgetting_curves(table: Table, device: str = "cpu") -> bytes:
    return _png(forgetting_curves_figure(table, device))


# -- Pareto plots ------------------------------------------------------------------------
_COSTS = (("trainable", "trainable parameters (max over stages)"),
          ("train_seconds", "training time, all stages (s)"))


def pareto_figure(table: Table, device: str = "cpu", level: float = 0.95):
    """ACC against trainable parameters and against training time; the Pareto front joined.

    Error bars: bootstrap intervals over seeds, inside the metric's range (ACC in [0, 1], costs > 0).
    Points of equal cost are dodged sideways by a few pixels (their cost is unchanged) so that their
    error bars stay apart; labels go where they overlap no other label and no point (`place_labels`)."""
    from matplotlib.transforms import ScaledTranslation

    plt = _pyplot()
    styles = _row_styles(table.rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), squeeze=False, dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.11, top=0.9, wspace=0.14)
    ys = [_row_interval(r, "acc", 0.0, 1.0) for r in table.rows]
    for ax, (key, xlabel) in zip(axes[0], _COSTS):
        points = []  # (x, xlo, xhi, y, ylo, yhi, row, style)
        for row, st, (y, ylo, yhi) in zip(table.rows, styles, ys):
            x, xlo, xhi = _row_interval(row, key, lower=0.0)
            if np.isfinite(x) and x > 0 and np.isfinite(y):
                points.append((x, xlo, xhi, y, ylo, yhi, row, st))
        ax.set_xscale("log")
        xs = [v for p in points for v in p[:3] if np.isfinite(v) and v > 0]
        if xs:  # room on both sides for the labels
            lo, hi = math.log10(min(xs)), math.log10(max(xs))
            pad = max(0.3 * (hi - lo), 0.15)
            ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
            _log_ticks(ax.xaxis, decades=hi - lo + 2 * pad)
        ax.set_ylim(-0.02, 1.05)
        shifts = _dodge([ax.transData.transform((p[0], p[3]))[0] for p in points], fig.dpi)
        labels = []
        for (x, xlo, xhi, y, ylo, yhi, row, (color, marker, _)), shift in zip(points, shifts):
            where = ax.transData + ScaledTranslation(shift / 72, 0, fig.dpi_scale_trans)
            xerr = None if np.isnan(xlo) or xhi == xlo else [[x - xlo], [xhi - x]]
            yerr = None if np.isnan(ylo) else [[y - ylo], [yhi - y]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, ms=7, color=color, ecolor=color, elinewidth=1.1,
                        capsize=2.5, label=row.label, zorder=3, markerfacecolor=_tint(color), markeredgewidth=1.2,
                        transform=where)
            labels.append((x, y, row.label, color, where))
        front = pareto_front([(p[0], p[3]) for p in points])
        if len(front) > 1:
            ax.step(*zip(*front), where="post", color="#555555", lw=0.9, ls="--", alpha=0.7, zorder=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ACC (final average accuracy)")
        ax.grid(color="#eeeeee", lw=0.6, zorder=0)
        ax.set_axisbelow(True)
        place_labels(ax, labels)
    fig.suptitle(f"{table.title}: accuracy against cost, mean over seeds and {level:.0%} bootstrap interval "
                 "(dashed: Pareto front; points of equal cost drawn side by side)", fontsize=10)
    return fig


def pareto(table: Table, device: str = "cpu") -> bytes:
    return _png(pareto_figure(table, device))


# -- budget curves -----------------------------------------------------------------------
def budget_curves_figure(c: BudgetCurves, level: float = 0.95):
    """ACC and text retention against the training examples seen per stage (top) and against the training FLOPs
    of all stages (bottom; left out where no run recorded them), log x: one line per strategy through its
    budgets, mean over seeds, with its bootstrap interval as a band inside the metric's range."""
    plt = _pyplot()
    styles = _row_styles(c.curves)
    with_flops = any(math.isfinite(p.flops) and p.flops > 0 for curve in c.curves for p in curve.points)
    xs = [("seen", "training examples seen per stage (all phases)")]
    if with_flops:
        xs.append(("flops", "training FLOPs, all stages"))
    ys = [("acc", "ACC (final average accuracy)", 0.0, 1.0),
          ("retention", f"{c.retention_name} retention % (R[T, 0] / R[0, 0])", 0.0, math.inf)]
    fig, axes = plt.subplots(len(xs), 2, figsize=(13, 4.6 * len(xs)), squeeze=False, dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.8, bottom=0.1 / len(xs), top=1 - 0.12 / len(xs), wspace=0.18,
                        hspace=0.3)
    for (xkey, xlabel), ax_row in zip(xs, axes):
        for (ykey, ylabel, lower, upper), ax in zip(ys, ax_row):
            allx = []
            for curve, (color, marker, ls) in zip(c.curves, styles):
                pts = [p for p in curve.points if math.isfinite(getattr(p, xkey)) and getattr(p, xkey) > 0]
                x = np.array([getattr(p, xkey) for p in pts], dtype=np.float64)
                mean = np.array([getattr(p, ykey) for p in pts], dtype=np.float64)
                lo = np.clip([getattr(p, ykey + "_low") for p in pts], lower, upper)
                hi = np.clip([getattr(p, ykey + "_high") for p in pts], lower, upper)
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.sum() >= 2:
                    ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.13, lw=0, zorder=1)
                ax.plot(x, mean, color=color, marker=marker, ms=5.5, ls=ls, lw=1.3, label=curve.label, zorder=3,
                        markerfacecolor=_tint(color, 0.35), markeredgewidth=1.0)
                allx += list(x)
            ax.set_xscale("log")
            if allx:
                low, high = math.log10(min(allx)), math.log10(max(allx))
                pad = max(0.08 * (high - low), 0.05)
                ax.set_xlim(10 ** (low - pad), 10 ** (high + pad))
                _log_ticks(ax.xaxis, decades=high - low + 2 * pad)
                if xkey == "seen" and len(set(allx)) <= 8:  # the budgets themselves: "3.2k", "6.4k", "12.8k"
                    from matplotlib.ticker import NullLocator

                    ax.set_xticks(sorted(set(allx)), [_compact(v) for v in sorted(set(allx))])
                    ax.xaxis.set_minor_locator(NullLocator())
            if ykey == "acc":
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.axhline(100.0, color="grey", ls=":", lw=0.8, zorder=1)  # all of it kept
                ax.set_ylim(0.0, max(105.0, ax.get_ylim()[1]))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(color="#eeeeee", lw=0.6, zorder=0)
            ax.set_axisbelow(True)
    axes[0][-1].legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.03, 0.5), handlelength=3)
    fig.suptitle(f"{c.title}: budget curves, each strategy across stage budgets: mean over seeds and {level:.0%} "
                 "bootstrap interval (bands)", fontsize=10)
    return fig


def budget_curves(c: BudgetCurves) -> bytes:
    return _png(budget_curves_figure(c))


def _tint(color: str, amount: float = 0.55) -> tuple[float, float, float]:
    """The colour mixed with white: a marker's face, so that coinciding markers show each other's edges."""
    from matplotlib.colors import to_rgb

    return tuple(c + (1 - c) * amount for c in to_rgb(color))


def _dodge(px: list[float], dpi: float, near: float = 7.0, step: float = 6.0) -> list[float]:
    """Sideways shifts in points for markers at display x positions `px`: markers closer than `near`
    points to a neighbour form a group, spread `step` points apart around the group's centre, in the
    given order. Single markers are not moved."""
    order = sorted(range(len(px)), key=lambda i: (px[i], i))
    shifts, group = [0.0] * len(px), []
    for i in order + [None]:
        if i is not None and group and (px[i] - px[group[-1]]) * 72 / dpi < near:
            group.append(i)
            continue
        for k, g in enumerate(sorted(group)):
            shifts[g] = (k - (len(group) - 1) / 2) * step
        group = [] if i is None else [i]
    return shifts


def place_labels(ax, points: list[tuple], fontsize: float = 7.5) -> list:
    """Label each point (x, y, text, colour[, transform]) where the label overlaps no other label and no
    marker and stays inside the axes: the first free spot on rings of growing radius around the point,
    tried in a fixed order (so the result is deterministic); a label away from its point gets a leader
    line. Where no spot is free, the one with the least overlap. Returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = _Box.of(ax.get_window_extent(renderer))
    half = 4.5 * fig.dpi / 72  # a marker's half-size in pixels
    where = [p[4] if len(p) > 4 else ax.transData for p in points]
    centres = [w.transform((p[0], p[1])) for p, w in zip(points, where)]
    markers = [_Box(cx - half, cy - half, cx + half, cy + half) for cx, cy in centres]
    placed: list[_Box] = []
    angles = (0, 35, -35, 180, 145, -145, 70, -70, 110, -110, 90, -90)
    candidates = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a)))
                  for r in (6, 11, 18, 27, 38, 50, 64, 80, 98, 120) for a in angles]
    out = []
    for k, ((x, y, text, color, *_), w) in enumerate(zip(points, where)):
        ann = ax.annotate(text, (x, y), xycoords=w, xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                          zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
                          arrowprops=dict(arrowstyle="-", color=color, lw=0.7, shrinkA=0, shrinkB=4, alpha=0.8))
        best, best_cost = None, math.inf
        for dx, dy in candidates:
            b = _Box.of(_set_offset(ann, dx, dy, renderer))
            cost = sum(b.overlap(o) for o in placed) + sum(b.overlap(m) for i, m in enumerate(markers) if i != k)
            cost += b.area() - b.overlap(frame)  # outside the axes
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
            if cost == 0:
                break
        placed.append(_Box.of(_set_offset(ann, *best, renderer)))
        if math.hypot(*best) < 12:
            ann.arrow_patch.set_visible(False)  # next to its point: no leader line needed
        out.append(ann)
    return out


def _set_offset(ann, dx: float, dy: float, renderer):
    from matplotlib.text import Text

    ann.set_position((dx, dy))
    ann.set_horizontalalignment("left" if dx > 2 else "right" if dx < -2 else "center")
    ann.set_verticalalignment("bottom" if dy > 2 else "top" if dy < -2 else "center")
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)  # the text alone (an Annotation's adds its leader line)


class _Box:
    """An axis-aligned box in pixels, with 2 px of padding (a label's white background) so that labels
    do not touch."""

    def __init__(self, x0: float, y0: float, x1: float, y1: float):
        self.x0, self.y0, self.x1, self.y1 = x0 - 2, y0 - 2, x1 + 2, y1 + 2

    @classmethod
    def of(cls, bbox) -> "_Box":
        return cls(bbox.x0, bbox.y0, bbox.x1, bbox.y1)

    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def overlap(self, o: "_Box") -> float:
        w = min(self.x1, o.x1) - max(self.x0, o.x0)
        h = min(self.y1, o.y1) - max(self.y0, o.y0)
        return w * h if w > 0 and h > 0 else 0.0


def _log_ticks(axis, decades: float = 2.0) -> None:
    """Ticks at 1, 2 and 5 per decade (every integer multiple on an axis of under 1.5 decades),
    labelled 200k / 1.9M / 50, with no minor labels.

    Matplotlib's default labels every minor tick of a narrow log axis in 10^x notation, which overlaps.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if decades >= 1.5 else tuple(float(k) for k in range(1, 10))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _compact(v)))
    axis.set_minor_formatter(NullFormatter())


def _compact(v: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def render_figures(board: Leaderboard, device: str = "cpu") -> dict[str, dict[str, bytes]]:
    """Every figure as {stream: {file name: PNG bytes}}."""
    figures: dict[str, dict[str, bytes]] = {}
    for table in board.tables:
        figs = {"forgetting-curves.png": forgetting_curves(table, device), "pareto.png": pareto(table, device)}
        for row in table.rows:
            for kind in ("accuracy", "transfer"):
                figs[f"{slug(row.label)}-{kind}.png"] = matrix_heatmaps(row, table, kind, device)
            if has_routing(row):
                figs[f"{slug(row.label)}-routing.png"] = routing(row, table)
        figures[table.slug] = figs
    for c in board.curves:  # beside the stream's figures (its main budget's, where that is the default)
        if c.curves:
            figures.setdefault(c.slug, {})["budget-curves.png"] = budget_curves(c)
    return figures


def draw(board: Leaderboard, out_dir: Path, device: str = "cpu") -> dict[str, dict[str, bytes]]:
    """Write every figure under out_dir/<stream>/ (and return them, as render_figures does)."""
    from cl_bench.results import atomic_write_bytes

    figures = render_figures(board, device)
    for stream, figs in figures.items():
        for name, png in figs.items():
            atomic_write_bytes(Path(out_dir) / stream / name, png)
    return figures
