"""Where the published numbers come from, read off the result files themselves: per stream (and order) how many
files, which strategies, seeds, base seeds, budgets and models, the clbench version, git commit, torch threads and
device that made them, and the runs' own time. A page's `provenance` section (reporting.page), so that the write-up
of a publish says what ran from the files, never from memory; `mixed` names what the files do not share."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from cl_bench.reporting.collect import Run
from cl_bench.reporting.tables import Leaderboard

HEADER = ("Stream", "Files", "Strategies", "Seeds", "Base seeds", "Steps per stage", "Models", "clbench", "Commit",
          "Threads", "Run time (h)", "Dates")


@dataclass
class Provenance:
    """What one stream's (and order's) files share or span."""

    stream: str
    files: int = 0
    strategies: set = field(default_factory=set)
    seeds: set = field(default_factory=set)
    base_seeds: set = field(default_factory=set)
    steps: set = field(default_factory=set)
    models: set = field(default_factory=set)
    versions: set = field(default_factory=set)
    commits: set = field(default_factory=set)
    threads: set = field(default_factory=set)
    devices: set = field(default_factory=set)
    seconds: float = 0.0
    dates: set = field(default_factory=set)


def _runs(board: Leaderboard) -> dict[str, list[Run]]:
    """Every run of the board once, by its table's stream and order."""
    out: dict[str, dict[str, Run]] = defaultdict(dict)
    for t in board.tables:
        for r in t.rows:
            for run in r.runs:
                out[t.stream_title][str(run.path)] = run
    return {k: list(v.values()) for k, v in out.items()}


def provenance(board: Leaderboard) -> list[Provenance]:
    rows = []
    for stream, runs in _runs(board).items():
        p = Provenance(stream)
        for run in runs:
            doc, c = run.doc, run.config
            env = doc.get("environment") or {}
            p.files += 1
            p.strategies.add(c["strategy"])
            base, seed = run.unit
            p.seeds.add(seed)
            p.base_seeds.add(base)
            p.steps.add((c.get("budget") or {}).get("steps"))
            p.models.add(c.get("model"))
            p.versions.add((env.get("packages") or {}).get("clbench", "?"))
            commit = env.get("git_commit") or "?"  # None: not run from a git checkout
            p.commits.add(commit[:7] + ("-dirty" if commit.endswith("-dirty") else ""))
            p.threads.add(env.get("torch_threads"))
            p.devices.add(env.get("device", "?"))
            p.seconds += float((doc.get("timing") or {}).get("this_process_seconds") or 0.0)
            p.dates.add(str(doc.get("created", "?"))[:10])
        rows.append(p)
    return rows


def _span(values: set) -> str:
    vals = sorted((v for v in values if v is not None), key=lambda v: (str(type(v)), v))
    if vals and all(isinstance(v, int) for v in vals) and len(vals) > 2 and vals == list(range(vals[0], vals[-1] + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ", ".join(map(str, vals)) or "-"


def provenance_rows(board: Leaderboard, rows: list[Provenance] | None = None) -> list[list[str]]:
    return [[p.stream, str(p.files), str(len(p.strategies)), _span(p.seeds), _span(p.base_seeds), _span(p.steps),
             _span(p.models), _span(p.versions), _span(p.commits), _span(p.threads), f"{p.seconds / 3600:.2f}",
             (min(p.dates) + (f" to {max(p.dates)}" if len(p.dates) > 1 else "")) if p.dates else "-"]
            for p in (provenance(board) if rows is None else rows)]


def mixed(board: Leaderboard, rows: list[Provenance] | None = None) -> list[str]:
    """What the board's files do not all share that a publish must: the clbench version, the thread count, the
    device kind, a committed tree that they record (one sentence each; empty when they share them)."""
    rows = provenance(board) if rows is None else rows
    out = []
    for what, attr in (("clbench versions", "versions"), ("torch thread counts", "threads"), ("devices", "devices")):
        values = set().union(*(getattr(p, attr) for p in rows)) if rows else set()
        if len(values) > 1:
            out.append(f"the files span {len(values)} {what}: {_span(values)}")
    dirty = sorted(p.stream for p in rows if any(c.endswith("-dirty") for c in p.commits))
    if dirty:
        out.append(f"files of {', '.join(dirty)} were made from a tree with uncommitted changes")
    unknown = sorted(p.stream for p in rows if "?" in p.commits or "?" in p.versions)
    if unknown:
        out.append(f"files of {', '.join(unknown)} do not record their clbench version or commit")
    return out


def provenance_markdown(board: Leaderboard) -> str:
    found = provenance(board)  # read once: the table, the totals and what the files do not share
    if not found:
        return "No finished result files yet.\n"
    lines = ["| " + " | ".join(HEADER) + " |", "|---|" + "|".join("---:" for _ in HEADER[1:]) + "|",
             *("| " + " | ".join(r) + " |" for r in provenance_rows(board, found)), ""]
    said = mixed(board, found)
    lines.append(f"From the result files (`environment`, `config`, `timing.this_process_seconds`): "
                 f"{sum(p.files for p in found)} files, {sum(p.seconds for p in found) / 3600:.1f} h of runs in all"
                 + ("; " + "; ".join(said) if said else "; one clbench version, one thread count, "
                    "one device kind, every file from a committed tree") + ".")
    return "\n".join(lines) + "\n"
