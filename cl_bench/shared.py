"""Work shared across runs, computed once: the evaluation before the first stage (row 0 of the accuracy matrix).

Row 0 scores the base model with its fresh projectors. It is the same for every strategy whose
setup leaves the model's outputs as they were (`Strategy.setup_keeps_outputs`: the built-ins'
setups add zero-initialised adapters, identity wrappers or nothing; in the published results
the row, its items, probes and routing shares are bit-identical across all 14 strategies of a
seed), so it is stored under a content hash of everything that determines it: the base model's
key, the data, the encoders and their files, the seed (the projectors' initialisation), the
evaluation settings, the stream's options and order, precision and prompt format, and a
fingerprint of clbench's own source files (any change to the code is another entry). A
strategy that does not declare it, a plug-in's included, always evaluates its own row 0.

An entry is written atomically under a file lock: concurrent workers (a sweep) wait for the
one computing it and read it, never write it twice. What was looked up, saved and where the row
came from are in the result file (timing.row0_source). Which stages beyond row 0 are shared
at clbench's defaults was checked on the published results: none (no two strategies' row 1 is
the same). MMER's first per-modality fine-tune is full-ft's first stage at another learning
rate (3e-4 against full-ft's tuned 3e-5); full-ft's optional alignment phase trains with the
router's load-balancing loss, MoExtend's without; LoRA and adapters per modality initialise
their modules at another point of the random stream than their shared variants.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ENV = "CLBENCH_SHARED_CACHE"  # 0: compute everything in every run (the reference the tests compare with)
_CODE: str | None = None


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def code_fingerprint() -> str:
    """A hash of every Python source file of the installed clbench (cl_bench and its built-in strategies)."""
    global _CODE
    if _CODE is None:
        import cl_bench
        import cl_bench.strategies as built_in

        h = hashlib.sha256()
        # sorted, not a set: a set's order of paths changes from process to process (str hashes are salted)
        for root in sorted({Path(cl_bench.__file__).parent, Path(built_in.__file__).parent}):
            for f in sorted(root.rglob("*.py")):
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
        _CODE = h.hexdigest()
    return _CODE


def row0_key(ident: dict, eval_batch_size: int) -> str:
    """The content hash of a run's row 0: its identity without what only later stages depend on (the strategy,
    its options, the training budget)."""
    from cl_bench.data import stable_hash

    config = {k: v for k, v in ident["config"].items() if k not in ("strategy", "budget")}
    rest = {k: v for k, v in ident.items() if k not in ("config", "strategy_options")}
    return stable_hash({"what": "row0", "code": code_fingerprint(), "config": config, **rest,
                        "eval_batch_size": eval_batch_size})


def row0(cache_dir: Path, key: str, compute, tasks: int):
    """(row, items, extra, routing) of `key`: read if stored, else computed by `compute()` and stored; the second
    value says where it came from ("computed" or "stored")."""
    from filelock import FileLock

    from cl_bench.results import atomic_write_json

    directory = Path(cache_dir) / "shared"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"row0-{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                d = json.loads(path.read_text())
                if len(d["row"]) == tasks and len(d["items"]) == tasks:
                    return (d["row"], d["items"], d["extra"], d["routing"]), "stored"
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged: computed again and rewritten
        row, items, extra, routing = compute()
        atomic_write_json(path, {"row": row, "items": items, "extra": extra, "routing": routing})
        return (row, items, extra, routing), "computed"
