"""Land the republish on main once results/republish.sh has run to its end (step 7 wrote republish/leaderboard.md).

Usage, from main's root with main's clbench installed: python republish/land.py [--no-bench]

1. The republished files replace the earlier protocol's: results/runs, results/ablations, results/figures and
   results/leaderboard.* are removed from git and this folder's take their place (git mv); this folder goes.
2. The pages' notices that their files are the earlier protocol's are dropped (each must be found: a notice that was
   reworded stops the script, which then names it).
3. The quick start's printed summary (README and guide) becomes the republished full-ft seed-0 file, printed by
   format_summary (tests/test_docs.py checks it).
4. Everything derived from the files is made again by main's code, from the files alone: results/leaderboard.*,
   results/figures/ and the pages' generated sections (as `clbench publish` writes them after its sweep), then
   bench/ablations.py and bench/mmer.py with the script's seeds (every run is reused; --no-bench skips them).

Nothing is committed: read the diff and the findings, run the tests, then `git add -A results` (figures drawn
under new names are new files) and commit.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "republish"
QUICK_START = "results/runs/vision-audio/full-ft/mixtral-tiny-seed0-71ae97ba.json"
PAGES = ("docs/leaderboard.md", "README.md", "results/README.md")

# The quick start's run is the published file's run where it has the file's 2 threads (checked on 2026-12-07: a fresh
# clone's run with an empty cache wrote the file's key, 71ae97ba, and the same accuracy matrix and per-item results).
SAME_RUN = ("`results/`; on this project's 2-core CPU a fresh clone's run, at 2 threads, the default there, wrote "
            "the same file (its key, accuracy matrix and per-item results): `clbench reproduce FILE` checks yours):")

# (page, notice, what takes its place): a notice is its words, found whatever the line breaks, or a pattern (a
# blockquote, whole)
NOTICES = [
    ("README.md", "`results/`). Until the republish replaces it, that file is the earlier protocol's: today's tuned "
                  "defaults print other numbers (see \"What is measured\" below):", SAME_RUN),
    ("docs/guide.md", "`results/`). Until the republish replaces it, that file is the earlier protocol's: today's "
                      "tuned defaults print other numbers:", SAME_RUN),
    ("README.md", re.compile(r"> The protocol on main has moved on from the published result files:.*?\n\n", re.S), ""),
    ("docs/leaderboard.md", re.compile(r"> The protocol on main has moved on from these files:.*?\n\n", re.S), ""),
    ("docs/strategies.md", " Until the republish lands, the table and findings below are the earlier protocol's files "
                           "(the 400-step base, the earlier defaults, one torch thread a run).", ""),
    ("CHANGELOG.md", "Protocol (a republish follows; the published files are 0.3.0 and 0.4.0.dev0 runs of the earlier "
                     "protocol):",
     "Protocol (the published files are this version's republish, `results/republish.sh`):"),
]


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def pattern(notice: str | re.Pattern) -> re.Pattern:
    """`notice` with every space free to be any whitespace (the page wraps its lines where it likes)."""
    if isinstance(notice, re.Pattern):
        return notice
    return re.compile(r"\s+".join(re.escape(w) for w in notice.split(" ")))


def drop_notice(page: str, notice: str | re.Pattern, replacement: str) -> None:
    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    new, n = pattern(notice).subn(lambda m: replacement, text, count=1)
    if n != 1:
        sys.exit(f"{page}: the notice {pattern(notice).pattern[:60]!r}... is not there; drop it by hand")
    path.write_text(new, encoding="utf-8")


def quick_start(page: str) -> None:
    """The page's one fenced block ending in 'result file: ...' becomes format_summary of QUICK_START."""
    from cl_bench.reporting.summary import format_summary

    doc = json.loads((ROOT / QUICK_START).read_text())
    block = format_summary(doc, QUICK_START).rstrip("\n") + "\n"
    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    found = list(re.finditer(r"```\n((?:(?!```).)*?\nresult file: [^\n]*\n)```", text, flags=re.S))
    if len(found) != 1:
        sys.exit(f"{page}: {len(found)} summary blocks ending in 'result file:', expected one")
    path.write_text(text[:found[0].start(1)] + block + text[found[0].end(1):], encoding="utf-8")


def publish_from_files() -> None:
    """What `clbench publish` writes after its sweep, by main's code and from the files alone (no run is looked up or
    run): results/leaderboard.{md,csv,tex,html}, results/figures/ and the pages' generated sections."""
    import os

    from cl_bench.cli.report import board_of, write_page
    from cl_bench.reporting.figures import draw
    from cl_bench.reporting.leaderboard import render
    from cl_bench.results import atomic_write_text

    os.chdir(ROOT)
    board = board_of(Path("results"), None, "acc", "cpu")
    figures = draw(board, Path("results/figures"), "cpu")
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("html", "html")):
        atomic_write_text(Path(f"results/leaderboard.{ext}"), render(board, fmt, figures))
    write_page(PAGES, board)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-bench", action="store_true", help="skip bench/ablations.py and bench/mmer.py")
    args = ap.parse_args()
    if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
        sys.exit("the work tree has changes: commit them first (the republish's last files included)")
    if not (HERE / "leaderboard.md").exists():
        sys.exit("republish/leaderboard.md is missing: results/republish.sh has not run its last step yet")
    if not (ROOT / QUICK_START.replace("results/", "republish/", 1)).exists():
        sys.exit(f"the quick start's file {QUICK_START} is not among the republished files")
    moved = ["runs", "ablations", "figures", *sorted(p.name for p in HERE.glob("leaderboard.*"))]
    git("rm", "-r", "-q", *(f"results/{m}" for m in moved if (ROOT / "results" / m).exists()))
    for m in moved:
        git("mv", f"republish/{m}", f"results/{m}")
    git("rm", "-r", "-q", "republish")
    for page, notice, replacement in NOTICES:
        drop_notice(page, notice, replacement)
    for page in ("README.md", "docs/guide.md"):
        quick_start(page)
    publish_from_files()
    if not args.no_bench:
        for bench, seeds in (("bench/ablations.py", "0 1 2"), ("bench/mmer.py", "0 1 2 3 4")):
            subprocess.run([sys.executable, bench, "--seeds", *seeds.split(), "--threads", "2", "--results-dir",
                            "results/ablations", "--page", "docs/strategies.md", "--page", "README.md"],
                           cwd=ROOT, check=True)
    print("landed in the work tree (nothing committed): read `git diff --stat HEAD` and the findings, run the tests")


if __name__ == "__main__":
    main()
