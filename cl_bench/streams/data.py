"""Building, caching and batching task data (datasets library underneath)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cl_bench import faults


def default_cache_dir() -> Path:
    """$CLBENCH_CACHE, else ~/.cache/clbench."""
    return Path(os.environ.get("CLBENCH_CACHE") or Path.home() / ".cache" / "clbench")


def stable_hash(obj, n: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 16 MiB chunks (a checkpoint's shards need not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKSUMS = "clbench-checksums.json"


def _checksums(directory: Path) -> dict[str, str]:
    return {f.relative_to(directory).as_posix(): file_sha256(f)
            for f in sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name != CHECKSUMS)}


def damage(path: Path) -> str | None:
    """What is wrong with the cached dataset at `path` (a file written with it missing or changed), or None when
    every file matches the checksums written with it. (Files added later, e.g. the datasets library's own cache
    files, are not its damage.)"""
    listed = json.loads((path / CHECKSUMS).read_text())
    found = _checksums(path)
    for name, digest in listed.items():
        if name not in found:
            return f"{name} is missing"
        if found[name] != digest:
            return f"{name} does not match its checksum"
    return None


def cached_splits(path: Path, build: Callable[[], dict], echo: Callable[[str], None] | None = None):
    """Load a DatasetDict from `path`, or build it, save it atomically and return it.

    `build` returns {split: datasets.Dataset}. The directory appears only complete:
    it is written to a temporary sibling and renamed into place, with the checksums of
    its files; an entry that no longer matches them (or cannot be read) is rebuilt, and
    `echo` (default: standard error) says so.
    """
    from datasets import DatasetDict, load_from_disk

    say = echo or (lambda s: print(s, file=sys.stderr))
    path = Path(path)
    loaded = _load_verified(path, say)
    if loaded is not None:
        return loaded
    with build_lock(path):  # one process builds it; the others wait, then load what it built
        loaded = _load_verified(path, say)
        if loaded is not None:
            return loaded
        remove_partial(path)
        splits = DatasetDict(build())
        with atomic_directory(path) as tmp, _quiet_datasets():
            splits.save_to_disk(str(tmp))
            atomic_write_checksums(tmp)
            faults.point(f"build:{path.name}")
    return load_from_disk(str(path))


@contextmanager
def _quiet_datasets():
    """datasets' progress bars off while a cache entry is saved (a few hundred items: the bar is noise on the
    command's output), as they were after."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_on = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            enable_progress_bars()


def remove_partial(path: Path) -> None:
    """Remove what a killed build of `path` left (its temporary siblings); call it holding `build_lock(path)`,
    so that no live builder's are among them."""
    for p in Path(path).parent.glob(Path(path).name + ".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def build_lock(path: Path):
    """A lock (filelock) beside a cache entry, held while it is built: a second process waits for the first."""
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def _load_verified(path: Path, say):
    """The cached dataset at `path` if it is whole; None if there is none, or if it was damaged (then it is removed,
    and `say` says so)."""
    from datasets import load_from_disk

    if path.exists():
        try:
            if not (path / CHECKSUMS).exists():  # written before checksums were: trusted once, if it loads
                load_from_disk(str(path))
                atomic_write_checksums(path)
            problem = damage(path)
        except Exception as e:  # unreadable: a truncated arrow file, a broken dataset_dict.json, ...
            problem = f"it cannot be read ({type(e).__name__}: {str(e)[:200]})"
        if problem is None:
            return load_from_disk(str(path))
        say(f"data cache {path} is damaged ({problem}); rebuilding it")
        shutil.rmtree(path, ignore_errors=True)
    return None


def atomic_write_checksums(directory: Path) -> None:
    tmp = Path(directory) / (CHECKSUMS + ".tmp")
    tmp.write_text(json.dumps(_checksums(directory), indent=1, sort_keys=True))
    os.replace(tmp, Path(directory) / CHECKSUMS)


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
        for f in tmp.rglob("*"):  # some writers (safetensors) make their files 0600: give them open()'s mode
            if f.is_file() and not f.is_symlink():
                os.chmod(f, 0o666 & ~umask)
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent build won: keep it
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
