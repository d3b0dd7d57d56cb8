"""Building, caching and batching task data (datasets library underneath)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    if not (path / "dataset_dict.json").exists():
        splits = DatasetDict(build())
        with atomic_directory(path) as tmp:
            splits.save_to_disk(str(tmp))
    return load_from_disk(str(path))


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to fill; on success it is renamed to `target`.

    A reader sees no directory or a complete one. If another process created `target`
    meanwhile, theirs is kept; on error the temporary directory is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache is shared like any directory mkdir makes
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent build won: keep it
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
