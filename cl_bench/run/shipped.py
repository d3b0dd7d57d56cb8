"""Base models shipped in the package (cl_bench/bases/): the benchmark's base as an artefact, not a rebuild.

A preset's base is pre-trained on the stream's text task; floating-point sums differ across machines and thread
counts, so a base rebuilt elsewhere has other weights and every result built on it moves. The default bases are
therefore built once (`clbench base build`), shipped with clbench, and loaded by default: `load_base` looks for a
shipped base with the run's base key before it pre-trains anything. manifest.json holds, per base, its key, its
pre-training settings, its text accuracy and the sha256 of every file, checked on every load.
"""

from __future__ import annotations

import json
from pathlib import Path

BASES_DIR = Path(__file__).resolve().parent.parent / "bases"
MANIFEST = "manifest.json"


def manifest(directory: Path | None = None) -> list[dict]:
    """The shipped bases' entries (name, key, preset, pretrain, files' sha256, text accuracy), by name."""
    path = Path(directory or BASES_DIR) / MANIFEST
    if not path.exists():
        return []
    return sorted(json.loads(path.read_text())["bases"], key=lambda e: e["name"])


def find(key: str, directory: Path | None = None) -> tuple[Path, dict] | None:
    """The shipped base of this base key (its directory and manifest entry), or None."""
    for entry in manifest(directory):
        if entry["key"] == key:
            return Path(directory or BASES_DIR) / entry["name"], entry
    return None


def damage(path: Path, entry: dict) -> str | None:
    """What is wrong with a shipped base's files against its manifest entry, or None if every file matches."""
    from cl_bench.streams.data import file_sha256

    for name, digest in sorted(entry["files"].items()):
        f = Path(path) / name
        if not f.exists():
            return f"{name} is missing"
        if file_sha256(f) != digest:
            return f"{name} does not match its sha256"
    return None
