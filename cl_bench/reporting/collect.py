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


class Unit(tuple):
    """A run's pairing unit: (base seed, seed). Runs of one unit share the base model, the projector init and the
    data order, so paired statistics compare strategies unit by unit; with several base seeds in a row the base
    is a level of the design, not noise. Printed as the seed alone on base seed 0 ("3"), else "base1:3"."""

    def __new__(cls, base_seed: int, seed: int):
        return super().__new__(cls, (int(base_seed), int(seed)))

    def __str__(self) -> str:
        return str(self[1]) if self[0] == 0 else f"base{self[0]}:{self[1]}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def base_seed(doc: dict) -> int:
    """The base seed of a run (its preset's pre-training seed; 0 for a checkpoint, which has one base)."""
    return int(((doc.get("config") or {}).get("pretrain") or {}).get("seed", 0)) \
        if (doc.get("base_model") or {}).get("source") != "checkpoint" else 0


@dataclass
class Run:
    path: Path
    doc: dict

    @property
    def config(self) -> dict:
        return self.doc["config"]

    @property
    def unit(self) -> Unit:
        return Unit(base_seed(self.doc), self.doc["seed"])

    def group_key(self) -> str:
        """Runs that differ only by seed or base seed (or by where they ran) share a row; runs scored on generated
        answers never share one with teacher-forced runs, nor with runs of another scorer version."""
        c = dict(self.config)
        for k in ("seed", "device", "results_dir", "cache_dir", "eval_batch_size", *SCORING_FIELDS):
            c.pop(k, None)
        if isinstance(c.get("pretrain"), dict):
            c["pretrain"] = {k: v for k, v in c["pretrain"].items() if k != "seed"}
        if (label := scoring_label(self.doc)) is not None:
            c["scoring"] = label
        return json.dumps(c, sort_keys=True)


SCORING_FIELDS = ("scoring", "max_new_tokens")  # config fields that scoring_label (and a row's key) stands for


def scoring_label(doc: dict) -> str | None:
    """"generated, normalised-exact-match v1" for a run scored on generated answers (with ", at most N tokens" for
    a bound that is not the default); None for teacher-forced scoring (the default, and every file older than the
    option)."""
    config = doc.get("config") or {}
    if config.get("scoring", "teacher-forced") == "teacher-forced":
        return None
    record = doc.get("scoring") or {}
    bound = f", at most {config['max_new_tokens']} tokens" if config.get("max_new_tokens") is not None else ""
    return (f"{config['scoring']}, {record.get('scorer', 'unknown scorer')} v{record.get('scorer_version', '?')}"
            f"{bound}")


def with_scoring(label: str, doc: dict) -> str:
    """A row's `label` with how its runs were scored, where that is not teacher-forced:
    "full-ft [scoring: generated, normalised-exact-match v1]"."""
    scoring = scoring_label(doc)
    return label if scoring is None else f"{label} [scoring: {scoring}]"


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
        key, seed = r.doc.get("run_key"), r.unit
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
        budget_examples(doc)
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


def budget_examples(doc: dict) -> int:
    """A run's stage budget: training examples per stage, all phases together (config.budget steps x batch size)."""
    budget = doc["config"]["budget"]
    return int(budget["steps"]) * int(budget["batch_size"])


def budget_text(doc: dict) -> str:
    """A run's stage budget as given: "200 steps x 32"."""
    budget = doc["config"]["budget"]
    return f"{budget['steps']} steps x {budget['batch_size']}"


def spent_and_kept(run: Run) -> dict[str, float]:
    """Per run: the largest budget ratio of a stage and the most examples a stage saw, training FLOPs, the most past
    items held after a stage, and the per-task weight bytes at the end (NaN for result files older than schema 2,
    which did not record them)."""
    stages = run.doc["stages"]
    if run.doc.get("schema_version", 1) < 2:
        return dict.fromkeys(("budget_ratio", "stage_examples", "train_flops", "past_train", "past_val",
                              "task_weight_bytes"), float("nan"))
    seen = [s["training"].get("examples") for s in stages]
    return {"budget_ratio": max(s["training"]["budget_ratio"] for s in stages),
            "stage_examples": max((float(x) for x in seen if isinstance(x, (int, float))), default=float("nan")),
            "train_flops": sum(s["training"]["flops"] for s in stages),
            "past_train": max(sum(s["memory"]["past_train_items"].values()) for s in stages),
            "past_val": max(sum(s["memory"]["past_val_items"].values()) for s in stages),
            "task_weight_bytes": stages[-1]["memory"]["task_weight_bytes"]}


def declared(group: list[Run]) -> str:
    """What the runs of a row declare they keep and know (Declaration.short), "n/a" for files without one."""
    from cl_bench.api.strategy import Declaration

    labels = {"n/a" if r.doc.get("declaration") is None else Declaration(**r.doc["declaration"]).short() for r in group}
    return " / ".join(sorted(labels))
