"""Building, caching and batching task data (datasets library underneath)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """$CLBENCH_CACHE, else ~/.cache/clbench."""
    return Path(os.environ.get("CLBENCH_CACHE") or Path.home() / ".cache" / "clbench")


def stable_hash(obj, n: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def cached_splits(path: Path, build: Callable[[], dict]):
    """Load a DatasetDict from `path`, or build it, save it atomically and return it.

    `build` returns {split: datasets.Dataset}. The directory appears only complete:
    it is written to a temporary sibling and renamed into place.
    """
    from datasets import DatasetDict, load_from_disk

    if (path / "dataset_dict.json").exists():
        return load_from_disk(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = DatasetDict(build())
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        splits.save_to_disk(str(tmp))
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_from_disk(str(path))
