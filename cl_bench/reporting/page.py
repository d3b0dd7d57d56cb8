"""The generated sections of a page (docs/leaderboard.md, the README): each section is regenerated from the board
between its own markers, `<!-- NAME:begin ... -->` and `<!-- NAME:end -->` (the text after NAME:begin, up to
`-->`, is free: it names the command that writes it), so that no number on a page is typed by hand.

Sections: leaderboard (the summary tables, readme.readme_section), findings (findings.findings_markdown), scale
(each stream's sizes and Kendall's tau, formats.scale_markdown) and provenance (what made the files: versions,
commits, threads, run time; provenance.provenance_markdown). A page holds any of them; `clbench publish --page`
and `clbench leaderboard --page` refuse a page that holds none, before any run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cl_bench.errors import UsageError
from cl_bench.reporting.tables import Leaderboard
from cl_bench.results import LEADERBOARD_PAGE


def scale_section(board: Leaderboard) -> str:
    """Every table's scale section (its strategies at each model size, Kendall's tau between sizes)."""
    from cl_bench.reporting.formats import scale_markdown

    if not board.scale:
        return "No stream has runs at more than one model size yet (`clbench publish --models M1,M2`).\n"
    return "\n".join(line for s in board.scale for line in scale_markdown(s)).rstrip() + "\n"


def _leaderboard(board: Leaderboard) -> str:
    from cl_bench.reporting.readme import readme_section

    return readme_section(board)


def _findings(board: Leaderboard) -> str:
    from cl_bench.reporting.findings import findings_markdown

    return findings_markdown(board)


def _provenance(board: Leaderboard) -> str:
    from cl_bench.reporting.provenance import provenance_markdown

    return provenance_markdown(board)


SECTIONS: dict[str, Callable[[Leaderboard], str]] = {
    "leaderboard": _leaderboard, "findings": _findings, "scale": scale_section, "provenance": _provenance}


def _bounds(text: str, name: str, path) -> tuple[int, int] | None:
    """Where section `name`'s body lies in `text` (after its begin marker, before its end marker), or None."""
    begin = text.find(f"<!-- {name}:begin")
    if begin < 0:
        return None
    body = text.find("-->", begin)
    stop = text.find(f"<!-- {name}:end -->", body)
    if body < 0 or stop < 0:
        raise UsageError(f"{path}: the {name} section's begin marker has no '<!-- {name}:end -->' after it; "
                         "put it on a line of its own where the section ends")
    return body + 3, stop


def sections_of(path) -> list[str]:
    """The sections page `path` has markers for; a UsageError naming the markers when it has none."""
    text = Path(path).read_text(encoding="utf-8")
    found = [name for name in SECTIONS if _bounds(text, name, path) is not None]
    if not found:
        names = ", ".join(SECTIONS)
        raise UsageError(f"{path} has no section markers; put '<!-- leaderboard:begin -->' and "
                         f"'<!-- leaderboard:end -->' (or {names} in place of leaderboard) on lines of their own where "
                         f"a generated section goes (clbench's own leaderboard section is in {LEADERBOARD_PAGE})")
    return found


def regenerate(text: str, board: Leaderboard, path=None) -> str:
    """`text` with every section it has markers for rewritten from `board`."""
    for name, render in SECTIONS.items():
        where = _bounds(text, name, path)
        if where is not None:
            text = text[:where[0]] + "\n\n" + render(board) + "\n" + text[where[1]:]
    return text


def sections_present(path, names, what: str, home: str | None = None) -> list[str]:
    """Which of the sections `names` page `path` has markers for (a bench script's table and findings); a
    UsageError naming the markers and the fix when it has none of them (checked before a long job, as
    results.check_markers does for one section)."""
    return _present(Path(path).read_text(encoding="utf-8"), names, path, what, home)


def _present(text: str, names, path, what: str, home: str | None) -> list[str]:
    found = [name for name in names if _bounds(text, name, path) is not None]
    if not found:
        markers = " or ".join(f"'<!-- {n}:begin -->' and '<!-- {n}:end -->'" for n in names)
        raise UsageError(f"{path} has no {what} markers; put {markers} on lines of their own where the {what} goes"
                         + (f" (clbench's own {what} is in {home})" if home else ""))
    return found


def write_sections(path, bodies: dict[str, str], what: str, home: str | None = None) -> list[str]:
    """Page `path` with each section of `bodies` that it has markers for rewritten (atomically), the others left
    alone; returns the sections written. A UsageError when it has none (sections_present)."""
    from cl_bench.results import atomic_write_text

    text = Path(path).read_text(encoding="utf-8")
    names = _present(text, list(bodies), path, what, home)
    for name in names:
        start, stop = _bounds(text, name, path)
        text = text[:start] + "\n" + bodies[name] + text[stop:]
    atomic_write_text(Path(path), text)
    return names
