"""Result files -> runs: every file under results/runs read, checked and told apart, the rest left out with why.

A file is left out, on one line naming the field and the rule it breaks, when it is unreadable, of a newer
schema, from an unfinished run or against the result schema (cl_bench.results.check_result). A run is known by
its run key and its content: a second copy of a run is counted once, and listed with the file it repeats (here a
copy of a file's bytes; in drop_repeats a file of a row with the run_key, seed and accuracy matrix of another).
No file stops the others from being read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cl_bench.results import check_result, parse_result, wrong_kind


@dataclass
class Run:
    path: Path
    doc: dict

    @property
    def config(self) -> dict:
        return self.doc["config"]

    def group_key(self) -> str:
        """Runs that differ only by seed (or by where they ran) share a row."""
        c = dict(self.config)
        for k in ("seed", "device", "results_dir", "cache_dir", "eval_batch_size"):
            c.pop(k, None)
        return json.dumps(c, sort_keys=True)


def collect(results_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every usable result file under results_dir/runs (a file's bytes once), and the files left out with why."""
    root = Path(results_dir) / "runs"
    runs, skipped = [], []
    seen: dict[str, Path] = {}  # sha256 of a file's bytes -> the file read first
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            data = path.read_bytes()
        except OSError as e:
            skipped.append((path, f"unreadable result file ({e})"))
            continue
        try:
            doc = parse_result(data, path)
        except ValueError as e:
            skipped.append((path, str(e).removeprefix(f"{path}: ")))
            continue
        if doc.get("status") != "complete":
            skipped.append((path, f"status {doc.get('status')!r}: not a finished run"))
            continue
        problem = unusable(doc)
        if problem:
            skipped.append((path, problem))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            skipped.append((path, f"a copy of {seen[digest]} (byte-identical): counted once"))
            continue
        seen[digest] = path
        runs.append(Run(path, doc))
    return runs, skipped


def drop_repeats(runs: list[Run]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The runs of one row, each run once: a file with the run_key, seed and accuracy matrix of a file before it is
    the same run (copied, or written again), not another seed; it is left out naming the file it repeats."""
    kept, repeats, seen = [], [], {}
    for r in runs:
        key, seed = r.doc.get("run_key"), r.doc["seed"]
        same = (key, seed, tuple(tuple(float(a) for a in row) for row in r.doc["accuracy_matrix"])) if key else None
        if same in seen:
            repeats.append((r.path, f"the same run as {seen[same]} (run_key {key!r}, seed {seed}, the same accuracy "
                                    "matrix): counted once"))
            continue
        if same:
            seen[same] = r.path
        kept.append(r)
    return kept, repeats


def unusable(doc: dict) -> str | None:
    """Why the leaderboard and the figures cannot use this result document, or None: "field: rule" for up to
    three problems (the result schema's, then the declaration's); then every field they read is read once
    here, so that nothing the schema checks miss can stop them later."""
    problems = check_result(doc) or declaration_problems(doc.get("declaration"))
    if problems:
        return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
    run = Run(Path(), doc)
    try:  # a last guard: the checks above cover these reads, so this names a gap in them, not a crash
        run.group_key()
        model_key(run)
        is_default_order(doc)
        mean_step(run)
        spent_and_kept(run)
        declared([run])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        return f"cannot be read ({type(e).__name__}: {e})"
    return None


def declaration_problems(declaration) -> list[str]:
    """What keeps `declaration` (a result's, optional) from being a cl_bench.api.Declaration: "field: rule" each."""
    from cl_bench.api.strategy import Declaration

    if declaration is None:
        return []
    kinds = {f.name: {"bool": "boolean", "str": "string"}.get(getattr(f.type, "__name__", str(f.type)), "")
             for f in dataclasses.fields(Declaration)}
    problems = []
    for name, value in declaration.items():
        if name not in kinds:
            problems.append(f"declaration.{name}: not a field of a declaration ({', '.join(kinds)})")
        elif kinds[name] and (bad := wrong_kind(f"declaration.{name}", value, kinds[name])):
            problems.append(bad)
    if not problems:
        try:
            Declaration(**declaration)
        except ValueError as e:  # its own checks (__post_init__)
            problems.append(f"declaration: {e}")
    return problems


# -- what the leaderboard reads of a run ---------------------------------------------------------
def run_order(doc: dict) -> tuple[str, ...]:
    """The order a run learnt its stream's new tasks in."""
    return tuple(doc["stream"].get("order") or [t["name"] for t in doc["stream"]["tasks"][1:]])


def is_default_order(doc: dict) -> bool:
    return list(run_order(doc)) == list(doc["stream"].get("default_order") or run_order(doc))


def model_key(run: Run) -> str:
    """Runs with the same base model and budget share a reference for intransigence."""
    c = run.config
    return json.dumps([c["model"], c["budget"], c["pretrain"], c.get("encoders")], sort_keys=True)


def mean_step(run: Run) -> float:
    """Seconds per optimizer step, averaged over stages (a strategy with phases reports its main one)."""
    steps = [(s.get("train_stats") or {}).get("seconds_per_step") for s in run.doc["stages"]]
    steps = [x for x in steps if isinstance(x, (int, float)) and x > 0]
    return sum(steps) / len(steps) if steps else float("nan")


def spent_and_kept(run: Run) -> dict[str, float]:
    """Per run: the largest budget ratio of a stage, training FLOPs, the most past items held after a stage, and the
    per-task weight bytes at the end (NaN for result files older than schema 2, which did not record them)."""
    stages = run.doc["stages"]
    if run.doc.get("schema_version", 1) < 2:
        return dict.fromkeys(("budget_ratio", "train_flops", "past_train", "past_val", "task_weight_bytes"),
                             float("nan"))
    return {"budget_ratio": max(s["training"]["budget_ratio"] for s in stages),
            "train_flops": sum(s["training"]["flops"] for s in stages),
            "past_train": max(sum(s["memory"]["past_train_items"].values()) for s in stages),
            "past_val": max(sum(s["memory"]["past_val_items"].values()) for s in stages),
            "task_weight_bytes": stages[-1]["memory"]["task_weight_bytes"]}


def declared(group: list[Run]) -> str:
    """What the runs of a row declare they keep and know (Declaration.short), "n/a" for files without one."""
    from cl_bench.api.strategy import Declaration

    labels = {"n/a" if r.doc.get("declaration") is None else Declaration(**r.doc["declaration"]).short() for r in group}
    return " / ".join(sorted(labels))
