"""Hyperparameter selection on validation data only: `clbench tune`.

Each strategy declares the values to try (`Strategy.tuning`: option -> values, in the order the options are
tuned) and what to maximise (`Strategy.tuning_score`). Every evaluation runs the whole stream with every
evaluation on the validation splits (RunConfig.eval_split="val"), so no test item is scored. The procedure,
deterministic and rerunnable from the report:

1. Start from the strategy's defaults. Tune the options one at a time, in declared order (coordinate-wise, one
   pass): each value of the option runs with the options tuned so far at their choice and the rest at defaults.
   The option's value the round starts from (its default) competes too where the grid does not hold it, so a
   round never ends below the point it began from (a grid value must beat the default to replace it).
2. Score: "final" is the final validation ACC (mean of the last row over every task); "own" is the mean over the
   new tasks of their validation accuracy right after their own stage (a per-task reference such as single-ft).
   A point's score is its mean over the tuning seeds (0 and 1); the highest wins, ties to the earlier value.
3. Noise: where the runner-up's mean is within the seed spread of the two best points (the larger of their
   seeds' standard deviations), both get a third seed (2) and the choice is made again on three.
4. Edges: where a numeric option's choice is the smallest or largest value tried, the grid is widened by one
   value that way (the edge value times the ratio to its neighbour) and the option tuned again, at most
   WIDENINGS times; a value the strategy refuses (a ValueError) stops the widening and is reported as refused;
   a choice still on the edge is reported as such.

The report (every point tried, its seeds and scores, the choices, the command) is written as JSON and Markdown,
and the strategies' defaults cite it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from cl_bench.errors import PluginError
from cl_bench.results import TUNING_PAGE

TUNING_SEEDS = (0, 1)
EXTRA_SEED = 2  # the third seed of a noisy choice
WIDENINGS = 2  # values added past an edge, per option
SCORES = ("final", "own")


def point_label(point: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "defaults"


def choose(scores: list[list[float]]) -> int:
    """Index of the point with the highest mean score over seeds (the first of tied ones)."""
    means = [sum(s) / len(s) for s in scores]
    best = max(means)
    return next(i for i, m in enumerate(means) if m == best)


def score(doc: dict, rule: str = "final") -> float:
    """A tuning run's score (see the module's docstring), rounded to 6 digits."""
    R = doc["accuracy_matrix"]
    if rule == "own":
        diag = [R[k][k] for k in range(1, len(R))]
        return round(sum(diag) / len(diag), 6)
    return round(sum(R[-1]) / len(R[-1]), 6)


def noisy(a: list[float], b: list[float]) -> bool:
    """Whether two points' mean scores are closer than the larger of their seeds' standard deviations."""
    if len(a) < 2 or len(b) < 2:
        return False
    spread = max(statistics.stdev(a), statistics.stdev(b))
    return abs(statistics.fmean(a) - statistics.fmean(b)) < spread


def widened(values: tuple[str, ...], chosen: str) -> str | None:
    """The value one step past the edge where `chosen` sits, or None (not numeric, not on an edge, one value)."""
    try:
        nums = [float(v) for v in values]
    except ValueError:
        return None
    if len(nums) < 2 or float(chosen) not in (min(nums), max(nums)):
        return None
    ordered = sorted(nums)
    if float(chosen) == ordered[-1]:
        edge, inner = ordered[-1], ordered[-2]
    else:
        edge, inner = ordered[0], ordered[1]
    if edge <= 0 or inner <= 0:  # a geometric step needs positive values
        step = edge - inner
        new = edge + step
    else:
        new = edge * (edge / inner)
    integral = all(float(v).is_integer() and "." not in v and "e" not in v.lower() for v in values)
    if integral:
        return str(round(new))
    if any("e" in v.lower() for v in values):  # written as 3e-4: 3.3e-3, as the grid is
        mantissa, exponent = f"{new:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{new:.2g}"


def load_grids(path: str) -> dict[str, dict]:
    """A grids file (`clbench tune --grids`): strategy -> {"grid": {option: values}, "score": rule or None}. The
    file maps each strategy to its options' values in tuning order, with an optional `score: final|own`."""
    import yaml

    from cl_bench.errors import UsageError

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"--grids {path}: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--grids {path}: a mapping strategy: {{option: [values]}} is expected")
    out = {}
    for name, spec in doc.items():
        if not isinstance(spec, dict) or not spec:
            raise UsageError(f"--grids {path}: {name}: give its options' values, e.g. {name}: {{lr: [1e-4, 3e-4]}}")
        spec = dict(spec)
        rule = spec.pop("score", None)
        if rule is not None and rule not in SCORES:
            raise UsageError(f"--grids {path}: {name}: score must be one of {', '.join(SCORES)}, got {rule!r}")
        grid = {}
        for option, values in spec.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise UsageError(f"--grids {path}: {name}.{option}: no values")
            grid[str(option)] = tuple(str(v) for v in values)
        out[str(name)] = {"grid": grid, "score": rule}
    return out


def tune_strategy(name: str, run_one: Callable[[dict[str, str], int], dict], seeds=TUNING_SEEDS,
                  grid: dict[str, tuple[str, ...]] | None = None, rule: str | None = None) -> dict:
    """Tune `name` by the module's procedure (run_one(options, seed) -> result document); `grid` and `rule`
    replace the strategy's declared `tuning` and `tuning_score` (a retuning with other grids)."""
    from cl_bench import registry

    cls = registry.strategies.get(name)
    grid = {k: tuple(v) for k, v in (grid if grid is not None else getattr(cls, "tuning", {}) or {}).items()}
    rule = rule or getattr(cls, "tuning_score", "final")
    try:  # checked before any run: a grid naming no option of the strategy is its plug-in's bug
        defaults = {k: _default(cls, k) for k in grid}
        if rule not in SCORES:
            raise ValueError(f"{cls.__name__}.tuning_score is {rule!r}; use one of {', '.join(SCORES)}")
    except ValueError as e:
        raise PluginError(registry.strategies.label(name), str(e)) from e
    runs: dict[tuple, float] = {}  # (resolved options, seed) -> score: each point and seed runs once
    shown: dict[tuple, dict] = {}  # resolved options -> the options as first tried (the grid's spelling)

    def evaluate(point: dict[str, str], seed: int) -> float:
        # one run per resolved point and seed: {lr: default} and {} are the same run
        key = (tuple(sorted((k, _canonical(v)) for k, v in {**defaults, **point}.items())), seed)
        shown.setdefault(key[0], {**defaults, **point})
        if key not in runs:
            doc = run_one(dict(point), seed)
            if doc["config"].get("eval_split") != "val":
                raise ValueError(f"tuning run of {name} ({point_label(point)}) was not evaluated on validation data")
            runs[key] = score(doc, rule)
        return runs[key]

    chosen: dict[str, str] = {}
    rounds, tried, refused = [], {k: list(v) for k, v in grid.items()}, {}
    # each option's default competes first in its round (ties keep it) unless the grid holds it already
    starts = {k: [] if any(_same(defaults[k], v) for v in tried[k]) else [defaults[k]] for k in grid}
    for option in grid:
        start = starts[option]
        for widening in range(WIDENINGS + 1):
            values = start + tried[option]
            points = [{**chosen, option: v} for v in values]
            seeds_of = {v: list(seeds) for v in values}
            scores = [[evaluate(p, s) for s in seeds] for p in points]
            best = choose(scores)
            ranked = sorted(range(len(points)), key=lambda i: (-statistics.fmean(scores[i]), i))
            if len(ranked) > 1 and EXTRA_SEED not in seeds and noisy(scores[ranked[0]], scores[ranked[1]]):
                for i in ranked[:2]:
                    scores[i].append(evaluate(points[i], EXTRA_SEED))
                    seeds_of[values[i]].append(EXTRA_SEED)
                # the two re-scored points against the others' two-seed means: the best mean wins
                best = choose(scores)
            rounds.append({"option": option, "fixed": dict(chosen),
                           "points": [{"value": v, "seeds": seeds_of[v], "scores": sc,
                                       "mean": round(statistics.fmean(sc), 6), **({"start": True} if v in start else {})}
                                      for v, sc in zip(values, scores)],
                           "chosen": values[best]})
            value = values[best]
            more = widened(tuple(tried[option]), value)
            if more is None or more in tried[option] or widening == WIDENINGS:
                break
            try:
                evaluate({**chosen, option: more}, seeds[0])
            except ValueError as e:  # the strategy refuses the value past the edge (e.g. a bottleneck that does
                # not divide the hidden size): the grid cannot widen that way, and the choice stays on its edge
                refused.setdefault(option, []).append({"value": more, "error": (str(e).splitlines() or [""])[0]})
                break
            tried[option].append(more)
        chosen[option] = value
    if not grid:
        evaluate({}, seeds[0])
    points = [{"options": shown[k], "seeds": sorted(s for (k2, s) in runs if k2 == k),
               "val_acc": [runs[(k, s)] for s in sorted(s for (k2, s) in runs if k2 == k)]}
              for k in dict.fromkeys(k for k, _ in runs)]
    for p in points:
        p["mean"] = round(statistics.fmean(p["val_acc"]), 6)
    # on an edge: of the values tried, the default included where it competed (a default chosen outside the grid)
    still = [k for k in grid if widened(tuple(tried[k] + starts[k]), chosen[k]) is not None]
    return {"grid": {k: list(v) for k, v in grid.items()}, "tried": tried, "score": rule, "procedure": "coordinate",
            "rounds": rounds, "points": points, "chosen": chosen, "on_edge": still, "refused": refused, "defaults_now": defaults,
            "defaults_match": all(_same(defaults[k], chosen[k]) for k in grid)}


def _default(cls, option: str) -> str:
    import dataclasses

    for f in dataclasses.fields(cls.Config):
        if f.name == option.replace("-", "_"):
            return str(f.default)
    raise ValueError(f"{cls.__name__}.tuning names {option!r}, which is not one of its options")


def same_point(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether two sets of options are the same run's ("1e-3" and "0.001" alike)."""
    return a.keys() == b.keys() and all(_canonical(a[k]) == _canonical(b[k]) for k in a)


def _canonical(value: str) -> str:
    """A value as a run key sees it: numbers by value ("1e-3" and "0.001" alike)."""
    try:
        return repr(float(value))
    except ValueError:
        return value


def _same(default: str, value: str) -> bool:
    try:
        return float(default) == float(value)
    except ValueError:
        return default == value


def to_markdown(report: dict) -> str:
    """The report as a Markdown table: one row per grid point, the chosen one in bold."""
    coordinate = any(r.get("procedure") == "coordinate" for r in report["strategies"].values())
    started = any(p.get("start") for r in report["strategies"].values() for rd in r.get("rounds", ())
                  for p in rd["points"])
    start = " (each option's default competing where its grid lacks it)" if started else ""
    how = (f"procedure: one option at a time in declared order{start}, seeds {', '.join(map(str, report['seeds']))} "
           f"(seed {EXTRA_SEED} added to the two best where they are within their seed spread), grids widened past "
           f"an edge up to {WIDENINGS} times (cl_bench.engines.tune); score: final validation ACC, or each new "
           "task's validation accuracy after its own stage where the strategy's score is 'own'; the highest mean is "
           "chosen, ties to the earlier value." if coordinate else
           f"score: final validation ACC, mean over seeds {', '.join(map(str, report['seeds']))}; the highest mean "
           "is chosen, ties to the earlier point.")
    lines = [f"# Hyperparameters chosen on validation data ({report['stream']})", "",
             f"`{report['command']}` (clbench {report['clbench']}); {how}", ""]
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
            mark = "**chosen**" if same_point(p["options"], {**r.get("defaults_now", {}), **r["chosen"]}) else ""
            if mark and r.get("on_edge"):
                mark += f" (edge of the grid: {', '.join(r['on_edge'])})"
            per_seed = " / ".join(f"{v:.3f}" for v in p["val_acc"])
            if "seeds" in p and p["seeds"] != report["seeds"]:
                per_seed += f" (seeds {', '.join(map(str, p['seeds']))})"
            lines.append(f"| {name} | {point_label(p['options'])} | {per_seed} | {p['mean']:.3f} | {mark} |")
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
    differs from its run's score); an empty list means every score matches.
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
        rule = r.get("score", "final")
        for point in r["points"]:
            # a point names the options tuned so far; the others ran at their defaults of the time
            full = {**r.get("defaults_now", {}), **point["options"]}
            for seed, value in zip(point.get("seeds", report["seeds"]), point["val_acc"]):
                found = [d for d in docs if d["seed"] == seed and all(
                    _same(str(d["config"]["strategy_options"].get(k.replace("-", "_"))), v) for k, v in full.items())]
                where = f"{name} {point_label(point['options'])} seed {seed}"
                if len(found) != 1:
                    problems.append(f"{where}: {len(found)} run files under {runs / name}")
                    continue
                if score(found[0], rule) != value:
                    problems.append(f"{where}: the report says {value}, its run file {score(found[0], rule)}")
    return problems


# The names say README: the table was there before the docs pages (results.TUNING_PAGE holds it now).
README_BEGIN = f"<!-- hparams:begin (clbench tune --page {TUNING_PAGE}) -->"
README_END = "<!-- hparams:end -->"


def summary_markdown(report: dict) -> str:
    """The docs' summary of a report (docs/strategies.md): per strategy, its grid, the choice and the runner-up."""
    extra = any(EXTRA_SEED in p.get("seeds", ()) for r in report["strategies"].values() for p in r["points"])
    lines = [f"| strategy | grid | chosen | mean val score (seeds {', '.join(map(str, report['seeds']))}"
             f"{f'; {EXTRA_SEED} where the two best were within their spread' if extra else ''}) "
             "| runner-up |", "|---|---|---|---:|---|"]
    for name, r in report["strategies"].items():
        # the default that competed in its option's round (where the grid lacks it) first, marked
        start = {rd["option"]: p["value"] for rd in r.get("rounds", ()) for p in rd["points"] if p.get("start")}
        grid = "; ".join(f"{k.replace('_', '-')} ∈ {{{', '.join(([start[k] + ' (default)'] if k in start else []) + v)}}}"
                         for k, v in r.get("tried", r["grid"]).items())
        ranked = sorted(r["points"], key=lambda p: -p["mean"])
        best = next(p for p in r["points"] if same_point(p["options"], {**r.get("defaults_now", {}), **r["chosen"]}))
        others = [p for p in ranked if p is not best]
        runner = f"{point_label(others[0]['options'])} ({others[0]['mean']:.3f})" if others else "-"
        edge = f" (edge: {', '.join(r['on_edge'])})" if r.get("on_edge") else ""
        lines.append(f"| {name} | {grid} | {point_label(r['chosen'])}{edge} | {best['mean']:.3f} | {runner} |")
    return "\n".join(lines) + "\n"


def splice_readme(text: str, section: str, path=None) -> str:
    """`text` (of the file `path`, named in an error) with everything between README_BEGIN and README_END replaced by
    `section`."""
    from cl_bench.results import splice_between

    return splice_between(text, README_BEGIN, README_END, "\n" + section, "tuning table", path=path, home=TUNING_PAGE)


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
