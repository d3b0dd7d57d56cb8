"""`clbench reproduce RESULT.json`: run a result file's configuration again and say how close the rerun is.

Bit-identical is the claim for the same kind of machine and thread count (the base model is shipped, so every
machine starts from the same weights). Elsewhere floating-point sums differ; the difference is then given in
units of the published seed-to-seed spread: the standard deviation of the final ACC over the published files
that share the configuration and differ only in seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from cl_bench.config import Budget, PretrainConfig
from cl_bench.errors import UsageError
from cl_bench.results import load_result
from cl_bench.run.config import RunConfig

# Within the spread: |rerun ACC - published ACC| <= this many seed standard deviations.
WITHIN_SDS = 2.0


def config_from_result(doc: dict, results_dir: str, cache_dir: str | None, threads: int | None) -> RunConfig:
    """The RunConfig that wrote `doc`, writing into `results_dir`; the thread count is the file's own (a CPU run's
    results depend on it) unless `threads` is given."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    cfg = {k: v for k, v in doc["config"].items() if k in fields and k not in ("budget", "pretrain")}
    recorded = (doc.get("environment") or {}).get("torch_threads")
    cfg.update(results_dir=results_dir, cache_dir=cache_dir, budget=Budget(**doc["config"]["budget"]),
               pretrain=PretrainConfig(**doc["config"]["pretrain"]),
               threads=threads if threads is not None else recorded)
    return RunConfig(**cfg)


def _same_setting(a: dict, b: dict) -> bool:
    drop = ("seed", "results_dir", "cache_dir")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def seed_spread(path: Path, doc: dict) -> tuple[float | None, int]:
    """The standard deviation of the final ACC over the complete files beside `path` whose configuration differs
    from `doc`'s only in seed (one file per seed), and how many seeds that is."""
    by_seed = {}
    for f in sorted(Path(path).parent.glob("*.json")):
        try:
            other = json.loads(f.read_text())
            same = other.get("status") == "complete" and _same_setting(other["config"], doc["config"])
            if same:
                by_seed.setdefault(other["config"]["seed"], other["metrics"]["acc"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a result file of this setting
            continue
    accs = [a for a in by_seed.values() if a is not None and not math.isnan(a)]
    return (statistics.stdev(accs) if len(accs) >= 2 else None), len(accs)


def compare(published: dict, rerun: dict, spread: float | None, seeds: int) -> dict:
    """Bit-identical (accuracy matrix and per-item results), or the ACC difference in seed standard deviations."""
    identical = (published["accuracy_matrix"] == rerun["accuracy_matrix"]
                 and published.get("item_results") == rerun.get("item_results"))
    diff = rerun["metrics"]["acc"] - published["metrics"]["acc"]
    cells = [abs(x - y) for r, s in zip(published["accuracy_matrix"], rerun["accuracy_matrix"])
             for x, y in zip(r, s) if x is not None and y is not None]
    sds = diff / spread if spread else None
    return {"identical": identical, "acc_published": published["metrics"]["acc"], "acc_rerun": rerun["metrics"]["acc"],
            "acc_difference": diff, "max_cell_difference": max(cells, default=0.0), "seed_sd": spread,
            "seeds": seeds, "difference_in_sd": sds,
            "within_spread": identical or (sds is not None and abs(sds) <= WITHIN_SDS)}


def describe(verdict: dict) -> str:
    if verdict["identical"]:
        return f"bit-identical: the rerun's accuracy matrix and per-item results equal the file's (ACC {verdict['acc_rerun']:.4f})"
    head = (f"not bit-identical: ACC {verdict['acc_rerun']:.4f} against {verdict['acc_published']:.4f} "
            f"(difference {verdict['acc_difference']:+.4f}; largest cell difference {verdict['max_cell_difference']:.4f})")
    if verdict["seed_sd"] is None:
        return head + f"; no seed spread to compare with ({verdict['seeds']} published seed(s) of this setting)"
    where = "within" if verdict["within_spread"] else "outside"
    return (head + f"; {verdict['difference_in_sd']:+.2f} seed standard deviations (SD {verdict['seed_sd']:.4f} over "
            f"{verdict['seeds']} published seeds): {where} the published spread (|difference| <= {WITHIN_SDS:g} SD)")


def reproduce(path: Path, results_dir: str, cache_dir: str | None, threads: int | None, progress: bool = False) -> dict:
    """Rerun the result file at `path` into `results_dir` and compare (see `compare`)."""
    from cl_bench.run.runner import run

    path = Path(path)
    doc = load_result(path)
    if doc.get("status") != "complete":
        raise UsageError(f"{path} is not a complete result (status {doc.get('status')!r}); give a finished run's file")
    if Path(results_dir).resolve() == path.parent.parent.parent.parent.resolve():
        raise UsageError(f"--results-dir {results_dir} is where {path} lives; give another directory, so that the "
                         "rerun does not replace the file it is compared with")
    config = config_from_result(doc, results_dir, cache_dir, threads)
    rerun, _ = run(config, progress=progress)
    spread, seeds = seed_spread(path, doc)
    return compare(doc, rerun, spread, seeds)
