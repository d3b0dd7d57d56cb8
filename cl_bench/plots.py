"""Figures from result files (seaborn / matplotlib, headless): nothing is re-run.

Per strategy (one row of the leaderboard): heatmaps of the accuracy matrix and of the
normalised transfer matrix, one panel per run and one for the mean over runs.
Per stream: forgetting curves (each task's accuracy across stages, one line per
strategy with its confidence band) and Pareto plots of ACC against trainable parameters
and against training time.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from cl_bench.leaderboard import Leaderboard, Row, Table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _matrices(row: Row, device: str):
    import torch

    return torch.tensor([r.doc["accuracy_matrix"] for r in row.runs], dtype=torch.float64, device=device)


def matrix_heatmaps(row: Row, table: Table, kind: str = "accuracy", device: str = "cpu") -> bytes:
    """One panel per run and one for the mean: R[i, j] (kind="accuracy") or the transfer matrix M[i, j]."""
    import seaborn as sns
    import torch

    from cl_bench import metrics

    plt = _pyplot()
    R = _matrices(row, device)  # [runs, T+1, T+1]
    if kind == "accuracy":
        mats, vmin, vmax, cmap, center = R, 0.0, 1.0, "viridis", None
    elif kind == "transfer":
        chance = torch.tensor([t["chance"] for t in table.tasks], dtype=torch.float64, device=R.device)
        mats, vmin, vmax, cmap, center = metrics.transfer_matrix(R, chance=chance), -1.0, 1.0, "RdBu", 0.0
    else:
        raise ValueError(f"kind must be 'accuracy' or 'transfer', got {kind!r}")
    mats = mats.cpu()
    panels = [(f"seed {r.doc['seed']}", mats[i]) for i, r in enumerate(row.runs)]
    if len(panels) > 1:
        panels.append((f"mean of {len(panels)}", mats.nanmean(0)))
    names = [t["name"] for t in table.tasks]
    stages = ["base"] + [f"after {n}" for n in names[1:]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.2), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels):
        sns.heatmap(m.numpy(), ax=ax, vmin=vmin, vmax=vmax, center=center, cmap=cmap, annot=True, fmt=".2f",
                    cbar=ax is axes[0][-1], xticklabels=names, yticklabels=stages if ax is axes[0][0] else False,
                    annot_kws={"size": 8})
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("task")
    what = "accuracy R[i, j]" if kind == "accuracy" else "transfer (R - R_ref) / (R_ref - chance)"
    fig.suptitle(f"{table.stream} / {row.label}: {what}", fontsize=10, y=1.03)
    return _png(fig)


def forgetting_curves(table: Table, device: str = "cpu") -> bytes:
    """Each task's accuracy after every stage, one line per strategy (mean and 95% CI band)."""
    from cl_bench import metrics

    plt = _pyplot()
    tasks = table.tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False, sharey=True)
    stages = list(range(len(tasks)))
    palette = _palette(len(table.rows))
    for ax, (j, task) in zip(axes[0], enumerate(tasks)):
        for color, row in zip(palette, table.rows):
            R = _matrices(row, device)[:, :, j].cpu()  # [runs, stages]
            mean, half, _ = metrics.mean_ci(R)
            half = half.nan_to_num(0)
            ax.plot(stages, mean.numpy(), marker="o", ms=3, color=color, label=row.label)
            ax.fill_between(stages, (mean - half).clamp(0, 1).numpy(), (mean + half).clamp(0, 1).numpy(),
                            color=color, alpha=0.10, linewidth=0)
        ax.axhline(task["chance"], color="grey", ls=":", lw=1)
        if j > 0:
            ax.axvline(j, color="grey", ls="--", lw=0.8)  # the stage that learns this task
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{task['name']} ({task['modality']})", fontsize=10)
        ax.set_xticks(stages, ["base"] + [t["name"] for t in tasks[1:]], fontsize=8)
        ax.set_xlabel("after stage")
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{table.stream}: accuracy of each task across stages, mean and 95% CI over seeds "
                 "(dotted: chance; dashed: the stage that learns the task)", fontsize=10)
    return _png(fig)


def pareto(table: Table) -> bytes:
    """ACC against trainable parameters and against training time; the Pareto front joined."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    palette = _palette(len(table.rows))
    for ax, key, xlabel in ((axes[0][0], "trainable", "trainable parameters (max over stages)"),
                            (axes[0][1], "train_seconds", "training time, all stages (s)")):
        pts = []
        for color, row in zip(palette, table.rows):
            (x, xh), (y, yh) = row.values[key], row.values["acc"]
            ax.errorbar(x, y, xerr=None if xh != xh else xh, yerr=None if yh != yh else yh, fmt="o", color=color,
                        capsize=2, label=row.label)
            ax.annotate(row.label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            pts.append((x, y))
        front = pareto_front(pts)
        if len(front) > 1:
            ax.step(*zip(*front), where="post", color="black", lw=0.8, ls="--", alpha=0.6)
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ACC (final average accuracy)")
    fig.suptitle(f"{table.stream}: accuracy against cost (dashed: Pareto front)", fontsize=10)
    return _png(fig)


def _log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 per decade, labelled 200k / 1.9M / 50, with no minor labels.

    Matplotlib's default labels every minor tick of a narrow log axis in 10^x notation, which overlaps.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _compact(v)))
    axis.set_minor_formatter(NullFormatter())


def _compact(v: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another with lower-or-equal cost and higher-or-equal accuracy, by cost."""
    best, front = float("-inf"), []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _palette(n: int):
    import seaborn as sns

    return sns.color_palette("tab20" if n > 10 else "tab10", n)


def render_figures(board: Leaderboard, device: str = "cpu") -> dict[str, dict[str, bytes]]:
    """Every figure as {stream: {file name: PNG bytes}}."""
    figures: dict[str, dict[str, bytes]] = {}
    for table in board.tables:
        figs = {"forgetting-curves.png": forgetting_curves(table, device), "pareto.png": pareto(table)}
        for row in table.rows:
            for kind in ("accuracy", "transfer"):
                figs[f"{slug(row.label)}-{kind}.png"] = matrix_heatmaps(row, table, kind, device)
        figures[table.stream] = figs
    return figures


def draw(board: Leaderboard, out_dir: Path, device: str = "cpu") -> dict[str, dict[str, bytes]]:
    """Write every figure under out_dir/<stream>/ (and return them, as render_figures does)."""
    from cl_bench.results import atomic_write_bytes

    figures = render_figures(board, device)
    for stream, figs in figures.items():
        for name, png in figs.items():
            atomic_write_bytes(Path(out_dir) / stream / name, png)
    return figures
