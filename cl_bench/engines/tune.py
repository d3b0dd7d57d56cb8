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

from cl_bench.errors import PluginError

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
    try:  # checked before any run: a grid naming no option of the strategy is its plug-in's bug
        defaults = {k: _default(cls, k) for k in grid}
    except ValueError as e:
        raise PluginError(registry.strategies.label(name), str(e)) from e
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
    return {"grid": grid, "points": [{"options": p, "val_acc": s, "mean": round(sum(s) / len(s), 6)}
                                     for p, s in zip(points, scores)],
            "chosen": points[best], "on_edge": on_edge(grid, points[best]), "defaults_now": defaults,
            "defaults_match": all(_same(defaults[k], points[best][k]) for k in grid)}


def on_edge(grid: dict[str, tuple[str, ...]], chosen: dict[str, str]) -> list[str]:
    """The numeric options whose chosen value is the smallest or largest of their grid.

    A choice on the edge says the best value may lie outside the grid: widen the grid that
    way and tune again.
    """
    edge = []
    for k, values in grid.items():
        try:
            nums = [float(v) for v in values]
        except ValueError:
            continue
        if len(nums) > 1 and float(chosen[k]) in (min(nums), max(nums)):
            edge.append(k)
    return edge


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
             ""]
    if "provenance" in report:
        pv = report["provenance"]
        bases = "; ".join(f"{key} ({b['runs']} runs" + "".join(f"; weights sha256 {sha}… recorded by {n}"
                                                              for sha, n in b["weights"].items()) + ")"
                          for key, b in pv["base_models"].items())
        lines += [f"Runs' torch threads: {', '.join(map(str, pv['torch_threads']))}; base model (key): {bases}. "
                  "Training is bit-reproducible for a given thread count and base model, not across thread counts.", ""]
    lines += ["| strategy | options | val ACC per seed | mean | |", "|---|---|---|---|---|"]
    for name, r in report["strategies"].items():
        for p in r["points"]:
            mark = "**chosen**" if p["options"] == r["chosen"] else ""
            if mark and r.get("on_edge"):
                mark += f" (edge of the grid: {', '.join(r['on_edge'])})"
            lines.append(f"| {name} | {point_label(p['options'])} | "
                         f"{' / '.join(f'{v:.3f}' for v in p['val_acc'])} | {p['mean']:.3f} | {mark} |")
    return "\n".join(lines) + "\n"


def provenance(docs: list[dict]) -> dict:
    """What the scores depend on beyond the grid: the runs' torch thread counts and base models.

    Training is bit-reproducible for a given thread count and base model, not across thread
    counts, so a rerun that should give the same scores needs both.
    """
    threads = sorted({d["environment"].get("torch_threads") for d in docs}, key=str)
    bases: dict[str, dict] = {}
    for d in docs:
        b = bases.setdefault(str(d["base_model"].get("key") or d["base_model"].get("path")), {"runs": 0, "weights": {}})
        b["runs"] += 1
        sha = d["base_model"].get("weights_sha256")  # recorded since 0.3.0.dev0's later runs
        if sha:
            b["weights"][sha[:16]] = b["weights"].get(sha[:16], 0) + 1
    return {"torch_threads": threads, "base_models": bases}


def recompute(report: dict, results_dir: Path) -> list[str]:
    """Every score of `report` recomputed from the run files under `results_dir`.

    Returns the problems found (a score with no run file, with more than one, or that
    differs from its run's final validation ACC); an empty list means every score matches.
    """
    from cl_bench.results import load_result

    runs = Path(results_dir) / "runs" / report["stream"]
    problems = []
    for name, r in report["strategies"].items():
        docs = [load_result(f) for f in sorted((runs / name).glob("*.json"))]
        docs = [d for d in docs if d.get("status") == "complete" and d["config"].get("eval_split") == "val"
                and d["environment"]["packages"].get("clbench") == report["clbench"]
                and d["config"]["budget"]["steps"] == report["budget"]["steps"]
                and d["config"].get("eval_limit") == report["budget"]["eval_limit"]]
        for point in r["points"]:
            for seed, score in zip(report["seeds"], point["val_acc"]):
                found = [d for d in docs if d["seed"] == seed and all(
                    _same(str(d["config"]["strategy_options"].get(k.replace("-", "_"))), v)
                    for k, v in point["options"].items())]
                where = f"{name} {point_label(point['options'])} seed {seed}"
                if len(found) != 1:
                    problems.append(f"{where}: {len(found)} run files under {runs / name}")
                    continue
                last = found[0]["accuracy_matrix"][-1]
                if round(sum(last) / len(last), 6) != score:
                    problems.append(f"{where}: the report says {score}, its run file {round(sum(last) / len(last), 6)}")
    return problems


README_BEGIN, README_END = "<!-- hparams:begin (clbench tune --readme README.md) -->", "<!-- hparams:end -->"


def summary_markdown(report: dict) -> str:
    """The README's summary of a report: per strategy, its grid, the choice and the runner-up."""
    lines = [f"| strategy | grid | chosen | mean final val ACC (seeds {', '.join(map(str, report['seeds']))}) "
             "| runner-up |", "|---|---|---|---:|---|"]
    for name, r in report["strategies"].items():
        grid = "; ".join(f"{k.replace('_', '-')} ∈ {{{', '.join(v)}}}" for k, v in r["grid"].items())
        ranked = sorted(r["points"], key=lambda p: -p["mean"])
        best = next(p for p in r["points"] if p["options"] == r["chosen"])
        others = [p for p in ranked if p is not best]
        runner = f"{point_label(others[0]['options'])} ({others[0]['mean']:.3f})" if others else "-"
        edge = f" (edge: {', '.join(r['on_edge'])})" if r.get("on_edge") else ""
        lines.append(f"| {name} | {grid} | {point_label(r['chosen'])}{edge} | {best['mean']:.3f} | {runner} |")
    return "\n".join(lines) + "\n"


def splice_readme(text: str, section: str) -> str:
    """`text` with everything between README_BEGIN and README_END replaced by `section`."""
    from cl_bench.results import splice_between

    return splice_between(text, README_BEGIN, README_END, "\n" + section, "tuning table")


def check_output(path: Path) -> None:
    """Before any tuning run: the report's folder must be creatable and writable, and OUT.json / OUT.md not
    folders (a whole grid used to run before the path failed)."""
    import os

    from cl_bench.errors import UsageError

    path = Path(path)
    folder = path.parent
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {path}: {parent} is a file, not a folder; choose another --out")
            if not os.access(parent, os.W_OK):
                raise UsageError(f"--out {path}: {parent} cannot be written; make it writable or choose another --out")
            break
    for f in (path.with_suffix(".json"), path.with_suffix(".md")):
        if f.is_dir():
            raise UsageError(f"--out {path}: {f} is a folder; choose another --out")


def write_report(report: dict, path: Path) -> None:
    from cl_bench.results import atomic_write_text

    path = Path(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), to_markdown(report))
