"""Hyperparameter selection on validation data only: `clbench tune`.

Each strategy declares a small grid (`Strategy.tuning`). Every grid point runs the whole
stream for each tuning seed with every evaluation on the validation splits
(RunConfig.eval_split="val"), so no test item is scored; the score of a run is its final
validation ACC (mean over tasks of the last row). The chosen point has the highest mean
score over seeds; ties go to the earlier point of the grid. The report (grid, every score,
the choice, the command) is written as JSON and Markdown, and the strategies' defaults
cite it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

TUNING_SEEDS = (0, 1)


def grid_points(grid: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in order (the first option varies slowest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def point_label(point: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "defaults"


def choose(scores: list[list[float]]) -> int:
    """Index of the point with the highest mean score over seeds (the first of tied ones)."""
    means = [sum(s) / len(s) for s in scores]
    best = max(means)
    return next(i for i, m in enumerate(means) if m == best)


def tune_strategy(name: str, run_one: Callable[[dict[str, str], int], dict], seeds=TUNING_SEEDS) -> dict:
    """Run `name`'s grid (run_one(options, seed) -> result document) and choose a point."""
    from cl_bench import registry

    cls = registry.strategies.get(name)
    grid = dict(getattr(cls, "tuning", {}) or {})
    points = grid_points(grid) if grid else [{}]
    scores = []
    for point in points:
        row = []
        for seed in seeds:
            doc = run_one(point, seed)
            if doc["config"].get("eval_split") != "val":
                raise ValueError(f"tuning run of {name} ({point_label(point)}) was not evaluated on validation data")
            last = doc["accuracy_matrix"][-1]
            row.append(round(sum(last) / len(last), 6))
        scores.append(row)
    best = choose(scores)
    defaults = {k: _default(cls, k) for k in grid}
    return {"grid": grid, "points": [{"options": p, "val_acc": s, "mean": round(sum(s) / len(s), 6)}
                                     for p, s in zip(points, scores)],
            "chosen": points[best], "defaults_now": defaults,
            "defaults_match": all(_same(defaults[k], points[best][k]) for k in grid)}


def _default(cls, option: str) -> str:
    import dataclasses

    for f in dataclasses.fields(cls.Config):
        if f.name == option.replace("-", "_"):
            return str(f.default)
    raise ValueError(f"{cls.__name__}.tuning names {option!r}, which is not one of its options")


def _same(default: str, value: str) -> bool:
    try:
        return float(default) == float(value)
    except ValueError:
        return default == value


def to_markdown(report: dict) -> str:
    """The report as a Markdown table: one row per grid point, the chosen one in bold."""
    lines = [f"# Hyperparameters chosen on validation data ({report['stream']})", "",
             f"`{report['command']}` (clbench {report['clbench']}); score: final validation ACC, mean over "
             f"seeds {', '.join(map(str, report['seeds']))}; the highest mean is chosen, ties to the earlier point.",
             "", "| strategy | options | val ACC per seed | mean | |", "|---|---|---|---|---|"]
    for name, r in report["strategies"].items():
        for p in r["points"]:
            mark = "**chosen**" if p["options"] == r["chosen"] else ""
            lines.append(f"| {name} | {point_label(p['options'])} | "
                         f"{' / '.join(f'{v:.3f}' for v in p['val_acc'])} | {p['mean']:.3f} | {mark} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, path: Path) -> None:
    from cl_bench.results import atomic_write_text

    path = Path(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), to_markdown(report))
