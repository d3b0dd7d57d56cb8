"""Result files: one versioned JSON document per run, written atomically."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from cl_bench import faults
from cl_bench.errors import EnvironmentProblem, UsageError

SCHEMA_VERSION = 3  # 2: per-item results, each stage's training record and memory, the declaration;
# 3: the routing analysis (routing.rows) and validation checkpoints inside stages (stages[i].checkpoints)
PACKAGES = ("clbench", "torch", "transformers", "tokenizers", "datasets", "avalanche-lib", "peft", "numpy", "scipy")


def _file_mode() -> int:
    """The mode open() would give a new file (0o666 less the umask); mkstemp's own 0o600 would make
    published results unreadable to anyone else."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _prepare(path) -> Path:
    """`path`'s directory made, and the temporary copies of `path` that killed writers left there removed
    (after STALE_SECONDS: a live writer's copy is younger), so that no atomic write leaves litter for good."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, f".{glob.escape(path.name)}.*.tmp")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part."""
    path = _prepare(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STALE_SECONDS = 3600  # no atomic write, data build or speech synthesis of clbench's takes this long


def sweep_stale(directory: Path, pattern: str, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove what killed processes left: entries of `directory` matching `pattern` not modified for
    `older_than` seconds (a live writer touches its own far more recently). Returns what was removed."""
    import time

    gone = []
    now = time.time()
    for p in Path(directory).glob(pattern) if Path(directory).is_dir() else []:
        try:
            if now - p.lstat().st_mtime < older_than:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(p)
        except OSError:  # taken by another sweeper, or not ours to remove
            continue
    return gone


# The docs pages that hold the generated sections; the command that writes a section splices it between its
# markers there (bench/ablations.py and bench/moextend_cost.py name their own pages: docs/strategies.md and
# docs/benchmarks.md). The README holds two short ones, the findings and the scale table (cl_bench.reporting.page).
LEADERBOARD_PAGE = "docs/leaderboard.md"  # clbench publish / leaderboard --page
TUNING_PAGE = "docs/strategies.md"  # clbench tune --page


def splice_between(text: str, begin: str, end: str, body: str, what: str, path=None, home: str | None = None) -> str:
    """`text` with everything between the markers `begin` and `end` replaced by `body`.

    The docs pages' generated sections (leaderboard, tuning table, ablations, MoExtend's cost) are spliced this
    way; a missing marker raises UsageError naming `what` goes there, the file (`path`) and, where given, the page
    that holds this section in clbench's own docs (`home`), since the README held them once.
    """
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        where = f"{path} has" if path is not None else "the file has"
        raise UsageError(f"{where} no {what} markers; put {begin!r} and {end!r} on lines of their own "
                         f"where the {what} goes" + (f" (clbench's own {what} is in {home})" if home else ""))
    return text[:start + len(begin)] + body + text[stop:]


def check_markers(path, begin: str, end: str, what: str, home: str | None = None) -> None:
    """Before a long job that ends by splicing into `path`: its markers must be there (a publish or a tuning used
    to run for hours and then fail on a README without them)."""
    splice_between(Path(path).read_text(encoding="utf-8"), begin, end, "", what, path=path, home=home)


def write_between(path, begin: str, end: str, body: str, what: str, home: str | None = None) -> None:
    """The file `path` with `body` between its markers (on a line after `begin`), written atomically; a missing
    marker is a UsageError naming `what` and the file (bench/ scripts write their tables into the docs so)."""
    text = Path(path).read_text(encoding="utf-8")
    atomic_write_text(Path(path), splice_between(text, begin, end, "\n" + body, what, path=path, home=home))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, obj) -> None:
    import torch

    path = _prepare(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _file_mode())
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, as atomic_write_bytes does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack_items(correct) -> str:
    """Per-item correctness (a sequence of bools, in test-split order) as compact text:
    the bits packed little-endian into bytes, base64-encoded (1,000 items -> 168 characters)."""
    import base64

    import numpy as np

    bits = np.packbits(np.asarray(correct, dtype=bool), bitorder="little")
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_items(text: str, n: int):
    """The inverse of pack_items: a bool numpy array of the `n` items' correctness."""
    import base64

    import numpy as np

    raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"packed item results hold {len(raw) * 8} bits, expected {n} items")
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)


def package_versions() -> dict[str, str | None]:
    from cl_bench import __version__

    # clbench's own version from the code that runs: an editable install's metadata keeps
    # the version it was installed at, and the run key uses __version__.
    out = {"clbench": __version__}
    for name in PACKAGES[1:]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the clbench checkout in use (with "-dirty" if it has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def environment(device) -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "packages": package_versions(),
           "git_commit": git_commit(), "device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def load_result(path: Path) -> dict:
    """Read a result file; raise EnvironmentProblem (a ValueError) naming the file, and the field where one is
    to blame, if it is unreadable, not a JSON object, or of a schema this clbench does not read."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise EnvironmentProblem(f"{path}: unreadable result file ({e})") from e
    return parse_result(data, path)


def parse_result(data: bytes, path) -> dict:
    """The result document in `data`, the bytes of the file `path`; raises as load_result does."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EnvironmentProblem(f"{path}: unreadable result file ({e})") from e
    if not isinstance(doc, dict):
        raise EnvironmentProblem(f"{path}: not a result file (a JSON {type(doc).__name__}, not an object)")
    if "schema_version" not in doc:
        raise EnvironmentProblem(f"{path}: result file lacks 'schema_version'")
    version = doc["schema_version"]
    if problem := wrong_kind("schema_version", version, "integer"):
        raise EnvironmentProblem(f"{path}: {problem}")
    if version > SCHEMA_VERSION:
        raise EnvironmentProblem(f"{path}: schema_version {version!r} is newer than this clbench reads "
                                 f"({SCHEMA_VERSION}); upgrade clbench")
    if version < 1:
        raise EnvironmentProblem(f"{path}: schema_version: {version} is below 1, the first schema")
    return doc


# The schema's checks: what a complete result file must hold (the leaderboard and `clbench validate` read them).
REQUIRED_KEYS = ("schema_version", "status", "config", "seed", "stream", "base_model", "accuracy_matrix",
                 "extra_accuracy", "metrics", "stages", "timing", "environment")
_KINDS = {"object": (dict, "an object"), "list": (list, "a list"), "string": (str, "a string"),
          "integer": (int, "an integer"), "number": ((int, float), "a number"), "boolean": (bool, "a boolean")}


def kind_of(value) -> str:
    """A JSON value's kind in words, as a problem names it: "a string", "an integer", "null", ..."""
    if value is None:
        return "null"
    for kind in ("boolean", "integer", "number", "string", "list", "object"):  # a bool is an int to Python
        if isinstance(value, _KINDS[kind][0]):
            return _KINDS[kind][1]
    return f"a {type(value).__name__}"


def wrong_kind(where: str, value, kind: str) -> str | None:
    """The problem "where: 'a' is a string, not a number" when `value` is not of `kind` (object, list, string,
    integer, number or boolean; true and false are not numbers, an integer is), else None."""
    types, words = _KINDS[kind]
    if isinstance(value, types) and not (isinstance(value, bool) and kind in ("integer", "number")):
        return None
    if value is None:
        return f"{where}: null, not {words}"
    text = repr(value)
    return f"{where}: {text if len(text) <= 40 else text[:36] + ' ...'} is {kind_of(value)}, not {words}"


class _Problems(list):
    """The problems found in a document, "field: rule" each."""

    def field(self, parent: dict, key: str, where: str, kind: str, optional: bool = False):
        """parent[key] when it is of `kind`, else None with the problem noted (an optional field may be absent
        or null: None, no problem)."""
        if optional and parent.get(key) is None:
            return None
        if key not in parent:
            self.append(f"{where}: missing")
            return None
        if problem := wrong_kind(where, parent[key], kind):
            self.append(problem)
            return None
        return parent[key]

    def first_of(self, found: list[str], what: str) -> None:
        """The first of several problems of one rule, with how many more there are."""
        if found:
            self.append(found[0] + (f" (and {len(found) - 1} more {what})" if len(found) > 1 else ""))


def check_result(result: dict) -> list[str]:
    """Problems with a result document, each "field: the rule it breaks" (empty when complete and consistent).

    Every field the leaderboard, the figures and `clbench validate` read is checked for its presence and kind
    before its value is used, so that a damaged file gets a line naming the field, never an exception.
    """
    if not isinstance(result, dict):
        return [f"not a result file (a JSON {type(result).__name__}, not an object)"]
    problems = _Problems(f"result file lacks {k!r}" for k in REQUIRED_KEYS if k not in result)
    if problems:
        return list(problems)
    version = problems.field(result, "schema_version", "schema_version", "integer") or 0
    problems.field(result, "status", "status", "string")
    problems.field(result, "run_key", "run_key", "string", optional=True)
    config = problems.field(result, "config", "config", "object")
    if config is not None:
        problems.field(config, "strategy", "config.strategy", "string")
        problems += [f"config.{k}: missing" for k in ("model", "budget", "pretrain") if k not in config]
    problems.field(result, "seed", "seed", "integer")
    n = _check_stream(problems, result, version)
    base = problems.field(result, "base_model", "base_model", "object")
    parameters = problems.field(base, "parameters", "base_model.parameters", "integer", optional=True) if base else None
    _check_matrix(problems, result, n)
    metrics = problems.field(result, "metrics", "metrics", "object")
    for k in ("acc", "bwt", "forgetting"):
        v = problems.field(metrics, k, f"metrics.{k}", "number") if metrics is not None else None
        if v is not None and not math.isfinite(v):
            problems.append(f"metrics.{k}: {v!r} is not finite")
    _check_stages(problems, result, n, version, parameters)
    timing = problems.field(result, "timing", "timing", "object")
    if timing is not None:
        problems.field(timing, "train_seconds", "timing.train_seconds", "number")
    problems.field(result, "declaration", "declaration", "object", optional=True)
    if version >= 2 and not problems:
        problems += _check_items(result)
    if version >= 3 and not problems:
        problems += _check_routing_record(result)
    return list(problems)


def _check_stream(problems: _Problems, result: dict, version: int) -> int | None:
    """Check the stream: a name, and tasks each named once with a modality and a chance (and a test size from
    schema 2); orders naming its new tasks. Returns the number of tasks (None when they are not a list)."""
    stream = problems.field(result, "stream", "stream", "object")
    if stream is None:
        return None
    problems.field(stream, "name", "stream.name", "string")
    tasks = problems.field(stream, "tasks", "stream.tasks", "list")
    if tasks is None:
        return None
    if len(tasks) < 2:
        problems.append(f"stream.tasks: {len(tasks)} task(s); a stream has a base task and at least one new task")
    names: dict[str, int] = {}
    for i, t in enumerate(tasks):
        where = f"stream.tasks[{i}]"
        if problem := wrong_kind(where, t, "object"):
            problems.append(problem)
            continue
        name = problems.field(t, "name", f"{where}.name", "string")
        if name is not None and name in names:
            problems.append(f"{where}.name: {name!r} is stream.tasks[{names[name]}]'s name too")
        elif name is not None:
            names[name] = i
        problems.field(t, "modality", f"{where}.modality", "string")
        chance = problems.field(t, "chance", f"{where}.chance", "number")
        if chance is not None and not 0.0 <= chance <= 1.0:
            problems.append(f"{where}.chance: {chance!r} is outside [0, 1]")
        n_test = problems.field(t, "n_test", f"{where}.n_test", "integer", optional=version < 2)
        if n_test is not None and n_test < 1:
            problems.append(f"{where}.n_test: {n_test} is not a number of test items (1 or more)")
    new = [t.get("name") for t in tasks[1:] if isinstance(t, dict)]
    for key in ("order", "default_order"):  # the new tasks' order this run learnt them in, and the stream's own
        for j, x in enumerate(problems.field(stream, key, f"stream.{key}", "list", optional=True) or []):
            if problem := wrong_kind(f"stream.{key}[{j}]", x, "string"):
                problems.append(problem)
            elif x not in new:
                problems.append(f"stream.{key}[{j}]: {x!r} is not a new task of the stream "
                                f"({', '.join(map(str, new))})")
    return len(tasks)


def _check_matrix(problems: _Problems, result: dict, n: int | None) -> None:
    """The accuracy matrix: n rows (the base model, then after each stage) of n numbers in [0, 1]."""
    R = problems.field(result, "accuracy_matrix", "accuracy_matrix", "list")
    if R is None:
        return
    if n is not None and len(R) != n:
        problems.append(f"accuracy_matrix: {len(R)} rows for {n} tasks (one per evaluation: the base model, "
                        "then after each stage)")
    kinds, ranges = [], []
    for i, row in enumerate(R):
        if problem := wrong_kind(f"accuracy_matrix[{i}]", row, "list"):
            problems.append(problem)
            continue
        if n is not None and len(row) != n:
            problems.append(f"accuracy_matrix[{i}]: {len(row)} cells for {n} tasks")
        for j, a in enumerate(row):
            if problem := wrong_kind(f"accuracy_matrix[{i}][{j}]", a, "number"):
                kinds.append(problem)
            elif not 0.0 <= a <= 1.0:
                ranges.append(f"accuracy_matrix[{i}][{j}]: {a!r} is outside [0, 1]")
    problems.first_of(kinds, "cells")
    problems.first_of(ranges, "cells")


def _check_stages(problems: _Problems, result: dict, n: int | None, version: int, parameters: int | None) -> None:
    """One record per stage: its cost (adding up), training time and losses; from schema 2 what it spent and kept."""
    stages = problems.field(result, "stages", "stages", "list")
    if stages is None:
        return
    if n is not None and len(stages) != n - 1:
        problems.append(f"stages: {len(stages)} stage records for {n - 1} stages")
    for i, s in enumerate(stages):
        where = f"stages[{i}]"
        if problem := wrong_kind(where, s, "object"):
            problems.append(problem)
            continue
        name = s.get("experience", i)  # the stage's task, as the checks beyond a field's kind name it
        cost = problems.field(s, "cost", f"{where}.cost", "object")
        c = {k: problems.field(cost, k, f"{where}.cost.{k}", "integer") for k in ("trainable", "added", "total")
             } if cost is not None else {}
        if c and None not in c.values():
            if parameters is not None and c["total"] != parameters + c["added"]:
                problems.append(f"stage {name}: cost does not add up: total {c['total']} != "
                                f"base {parameters} + added {c['added']}")
            if not 0 <= c["trainable"] <= c["total"]:
                problems.append(f"stage {name}: trainable {c['trainable']} outside [0, total]")
        seconds = problems.field(s, "train_seconds", f"{where}.train_seconds", "number")
        if seconds is not None and not math.isfinite(seconds):
            problems.append(f"{where}.train_seconds: {seconds!r} is not finite")
        stats = problems.field(s, "train_stats", f"{where}.train_stats", "object", optional=True) or {}
        losses = {k: v for k, v in stats.items() if k.endswith("_loss")}
        kinds = [p for k, v in losses.items() if (p := wrong_kind(f"{where}.train_stats.{k}", v, "number"))]
        problems += kinds
        if not kinds and not all(math.isfinite(v) for v in losses.values()):
            problems.append(f"stage {name}: training diverged (a loss is not finite)")
        if version < 2:
            continue
        training = problems.field(s, "training", f"{where}.training", "object")
        for k in ("budget_ratio", "flops") if training is not None else ():
            problems.field(training, k, f"{where}.training.{k}", "number")
        memory = problems.field(s, "memory", f"{where}.memory", "object")
        if memory is None:
            continue
        for k in ("past_train_items", "past_val_items"):
            for task, v in (problems.field(memory, k, f"{where}.memory.{k}", "object") or {}).items():
                if problem := wrong_kind(f"{where}.memory.{k}.{task}", v, "number"):
                    problems.append(problem)
        problems.field(memory, "task_weight_bytes", f"{where}.memory.task_weight_bytes", "number")


def _check_routing_record(result: dict) -> list[str]:
    """The routing analysis (schema 3): one entry per evaluation, None (no MoE layers) or giving per task a share
    per expert of every MoE layer, each layer's shares summing to 1 over the experts it had then, and per layer
    the stage that added each expert (-1: the model's own)."""
    routing = result.get("routing")
    rows = routing.get("rows") if isinstance(routing, dict) else None
    if not isinstance(rows, list) or len(rows) != len(result["accuracy_matrix"]):
        return ["routing analysis missing or not one entry per evaluation"]
    tasks = {t["name"] for t in result["stream"]["tasks"]}
    n_new = len(tasks) - 1
    problems = _Problems()
    for i, r in enumerate(rows):
        where = f"routing.rows[{i}]"
        if r is None:  # a model without MoE layers then
            continue
        if problem := wrong_kind(where, r, "object"):
            problems.append(problem)
            continue
        layers = problems.field(r, "layers", f"{where}.layers", "list")
        stages = problems.field(r, "expert_stage", f"{where}.expert_stage", "list")
        shares = problems.field(r, "shares", f"{where}.shares", "object")
        if layers is None or stages is None or shares is None:
            continue
        if set(shares) != tasks or len(stages) != len(layers):
            return [f"routing analysis of row {i} does not cover every task and layer"]
        for li, st in enumerate(stages):
            ok = isinstance(st, list) and all(isinstance(s, int) and not isinstance(s, bool) and -1 <= s < n_new
                                              for s in st)
            if not ok:
                return [f"{where}.expert_stage[{li}]: {st!r} is not a list of the stage that added each expert "
                        f"(-1: the model's own, else 0 to {n_new - 1})"]
        for task, per_layer in shares.items():
            if not (isinstance(per_layer, list) and len(per_layer) == len(stages)):
                return [f"routing analysis of row {i} does not cover every task and layer"]
            for li, (sh, st) in enumerate(zip(per_layer, stages)):
                numbers = isinstance(sh, list) and all(not wrong_kind("", v, "number") for v in sh)
                if not numbers or len(sh) != len(st) or not sh or abs(sum(sh) - 1) > 1e-4 or min(sh) < 0:
                    return [f"routing analysis of row {i}, {task}, layer {layers[li]}: shares {sh} are not "
                            f"a distribution over its {len(st)} experts"]
    return list(problems)


def _check_items(result: dict) -> list[str]:
    """Per-item results (schema 2) must decode to each task's test size and give the accuracy matrix exactly."""
    items = result.get("item_results")
    items = items.get("rows") if isinstance(items, dict) else None
    sizes = [t.get("n_test") for t in result["stream"]["tasks"]]
    if not isinstance(items, list) or len(items) != len(result["accuracy_matrix"]):
        return ["per-item results missing or not one row per evaluation"]
    for i, (row, packed) in enumerate(zip(result["accuracy_matrix"], items)):
        if not isinstance(packed, list) or len(packed) != len(row):
            return [f"per-item results of row {i} do not cover every task"]
        for j, (acc, text) in enumerate(zip(row, packed)):
            if problem := wrong_kind(f"item_results.rows[{i}][{j}]", text, "string"):
                return [problem]
            try:
                ok = unpack_items(text, sizes[j])
            except (ValueError, TypeError) as e:
                return [f"per-item results of row {i}, task {j} unreadable ({e})"]
            if int(ok.sum()) / sizes[j] != acc:
                return [f"per-item results of row {i}, task {j} give {int(ok.sum())}/{sizes[j]}, not the accuracy {acc}"]
    return []
