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


def splice_between(text: str, begin: str, end: str, body: str, what: str) -> str:
    """`text` with everything between the markers `begin` and `end` replaced by `body`.

    The README's generated sections (leaderboard, tuning table, ablations) are spliced this way;
    a missing marker raises ValueError naming `what` goes there.
    """
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"the README has no {what} markers; put {begin!r} and {end!r} on lines of their own "
                         f"where the {what} goes")
    return text[:start + len(begin)] + body + text[stop:]


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
    """Read a result file; raise ValueError naming the file if it is unreadable or of a newer schema."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable result file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a result file (a JSON {type(data).__name__}, not an object)")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r} is newer than this clbench reads ({SCHEMA_VERSION}); "
                         "upgrade clbench")
    return data


# The schema's checks: what a complete result file must hold (the leaderboard and `clbench validate` read them).
REQUIRED_KEYS = ("schema_version", "status", "config", "seed", "stream", "base_model", "accuracy_matrix",
                 "extra_accuracy", "metrics", "stages", "timing", "environment")


def check_result(result: dict) -> list[str]:
    """Problems with a result document (empty when it is complete and consistent)."""
    problems = [f"result file lacks {k!r}" for k in REQUIRED_KEYS if k not in result]
    if problems:
        return problems
    T1 = len(result["stream"]["tasks"])
    R = result["accuracy_matrix"]
    if len(R) != T1 or any(len(row) != T1 for row in R):
        problems.append(f"accuracy matrix is not {T1}x{T1}")
    elif not all(isinstance(a, float) and 0.0 <= a <= 1.0 for row in R for a in row):
        problems.append("accuracy matrix has values outside [0, 1]")
    if len(result["stages"]) != T1 - 1:
        problems.append(f"{len(result['stages'])} stage records for {T1 - 1} stages")
    base = result["base_model"].get("parameters")
    for s in result["stages"]:
        c = s.get("cost", {})
        if not {"trainable", "added", "total"} <= set(c):
            problems.append(f"stage {s.get('experience')}: cost report incomplete: {c}")
            continue
        if base is not None and c["total"] != base + c["added"]:
            problems.append(f"stage {s['experience']}: cost does not add up: total {c['total']} != "
                            f"base {base} + added {c['added']}")
        if not 0 <= c["trainable"] <= c["total"]:
            problems.append(f"stage {s['experience']}: trainable {c['trainable']} outside [0, total]")
        if not (isinstance(s.get("train_seconds"), (int, float)) and math.isfinite(s["train_seconds"])):
            problems.append(f"stage {s['experience']}: no train_seconds")
        losses = [v for k, v in (s.get("train_stats") or {}).items() if k.endswith("_loss")]
        if any(not (isinstance(v, (int, float)) and math.isfinite(v)) for v in losses):
            problems.append(f"stage {s['experience']}: training diverged (a loss is not finite)")
    for k in ("acc", "bwt", "forgetting"):
        v = result["metrics"].get(k)
        if v is None:
            problems.append(f"metric {k} missing")
        elif not (isinstance(v, (int, float)) and math.isfinite(v)):
            problems.append(f"metric {k} is not finite ({v})")
    if result["schema_version"] >= 2 and not problems:
        problems += _check_items(result)
    if result["schema_version"] >= 3 and not problems:
        problems += _check_routing_record(result)
    return problems


def _check_routing_record(result: dict) -> list[str]:
    """The routing analysis (schema 3): one entry per evaluation, None or per task a share per expert of
    every MoE layer, each layer's shares summing to 1 over the experts it had then."""
    rows = (result.get("routing") or {}).get("rows")
    if not isinstance(rows, list) or len(rows) != len(result["accuracy_matrix"]):
        return ["routing analysis missing or not one entry per evaluation"]
    tasks = {t["name"] for t in result["stream"]["tasks"]}
    for i, r in enumerate(rows):
        if r is None:
            continue
        stages = r.get("expert_stage") or []
        if set(r.get("shares") or {}) != tasks or len(stages) != len(r.get("layers") or []):
            return [f"routing analysis of row {i} does not cover every task and layer"]
        for task, layers in r["shares"].items():
            for li, (shares, st) in enumerate(zip(layers, stages)):
                if len(shares) != len(st) or abs(sum(shares) - 1) > 1e-4 or min(shares) < 0:
                    return [f"routing analysis of row {i}, {task}, layer {r['layers'][li]}: shares {shares} are not "
                            f"a distribution over its {len(st)} experts"]
    return []


def _check_items(result: dict) -> list[str]:
    """Per-item results (schema 2) must decode to each task's test size and give the accuracy matrix exactly."""
    items = result.get("item_results", {}).get("rows")
    sizes = [t.get("n_test") for t in result["stream"]["tasks"]]
    if not isinstance(items, list) or len(items) != len(result["accuracy_matrix"]):
        return ["per-item results missing or not one row per evaluation"]
    for i, (row, packed) in enumerate(zip(result["accuracy_matrix"], items)):
        if not isinstance(packed, list) or len(packed) != len(row):
            return [f"per-item results of row {i} do not cover every task"]
        for j, (acc, text) in enumerate(zip(row, packed)):
            try:
                ok = unpack_items(text, sizes[j])
            except (ValueError, TypeError) as e:
                return [f"per-item results of row {i}, task {j} unreadable ({e})"]
            if int(ok.sum()) / sizes[j] != acc:
                return [f"per-item results of row {i}, task {j} give {int(ok.sum())}/{sizes[j]}, not the accuracy {acc}"]
    return []
