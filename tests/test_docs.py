"""The front door: a short README, a docs site that builds strictly, and README commands that run as printed.

The README holds what clbench is, the quick start and links; everything else is a page under docs/, listed in
mkdocs.yml. The generated sections (leaderboard, tuning table, ablations, MoExtend's cost) live in those pages,
between the markers their commands splice into.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cl_bench.engines import tune
from cl_bench.reporting import readme as leaderboard_section
from cl_bench.results import LEADERBOARD_PAGE, TUNING_PAGE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200  # issue 31: a front door, not the manual
RUNNABLE = "<!-- runnable -->"


def nav_pages(nav) -> list[str]:
    """Every page path in mkdocs.yml's nav, however deeply sections nest."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


def runnable_blocks(text: str) -> list[list[str]]:
    """The command lines of each fenced block that a `<!-- runnable -->` line marks (the line right before it)."""
    lines, blocks = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != RUNNABLE:
            continue
        assert i + 1 < len(lines) and lines[i + 1].startswith("```"), f"README line {i + 1}: {RUNNABLE} marks no block"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append([x for x in lines[i + 2:end] if x.strip() and not x.lstrip().startswith("#")])
    return blocks


def bench_module(name: str):
    """A bench/ script as a module (bench/ is not a package; its scripts import only the standard library at the
    top)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move the detail to docs/"


def test_the_docs_build_strictly(tmp_path):
    # No skip when mkdocs is missing: it is in the test extra, and a docs site that cannot be built is a failure.
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, check=False,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # the theme's notice, not a warning
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = ROOT / config.get("docs_dir", "docs")
    listed = nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), f"a page is listed twice: {listed}"
    missing = [p for p in listed if not (docs / p).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"
    on_disk = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    unlisted = [p for p in on_disk if p not in listed]
    assert not unlisted, f"pages under docs/ missing from mkdocs.yml's nav: {unlisted}"


def test_the_generated_sections_live_in_their_docs_pages():
    """Each writer's markers are in the page its command names, once; the README holds only findings (a short
    page): the leaderboard's and the scale table, written by `clbench publish --page README.md`, and the
    ablations' sentences, written by the bench scripts with `--page README.md`."""
    from cl_bench.reporting.findings import FINDINGS_BEGIN, FINDINGS_END
    from cl_bench.reporting.page import sections_of

    ablations, cost, mmer = bench_module("ablations"), bench_module("moextend_cost"), bench_module("mmer")
    sections = [(LEADERBOARD_PAGE, leaderboard_section.README_BEGIN, leaderboard_section.README_END),
                (mmer.PAGE, mmer.BEGIN, mmer.END),
                (TUNING_PAGE, tune.README_BEGIN, tune.README_END),
                (ablations.PAGE, ablations.BEGIN, ablations.END),
                (cost.PAGE, cost.BEGIN, cost.END), (LEADERBOARD_PAGE, FINDINGS_BEGIN, FINDINGS_END),
                (LEADERBOARD_PAGE, "<!-- scale:begin (clbench publish --page docs/leaderboard.md) -->",
                 "<!-- scale:end -->"),
                ("README.md", "<!-- findings:begin (clbench publish --page README.md) -->", FINDINGS_END),
                ("README.md", "<!-- scale:begin (clbench publish --page README.md) -->", "<!-- scale:end -->"),
                (ablations.PAGE,
                 f"<!-- ablation-findings:begin (python bench/ablations.py --page {ablations.PAGE}) -->",
                 "<!-- ablation-findings:end -->"),
                ("README.md", "<!-- ablation-findings:begin (python bench/ablations.py --page README.md) -->",
                 "<!-- ablation-findings:end -->"),
                ("README.md", "<!-- mmer-findings:begin (python bench/mmer.py --page README.md) -->",
                 "<!-- mmer-findings:end -->")]
    for page, begin, end in sections:
        text = (ROOT / page).read_text(encoding="utf-8")
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end), (page, begin)
        if "(" in begin:  # the marker names the command that writes the section, with this page
            assert page in begin, (page, begin)
    assert sections_of(README) == ["findings", "scale"]


def test_readme_commands_marked_runnable_run_as_printed():
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert blocks and all(blocks), f"README.md marks no command {RUNNABLE}"
    # The installed clbench, as a reader who followed the quick start has it on PATH; offline, as the tests run.
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in (x for block in blocks for x in block):
        out = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
        assert out.returncode == 0, f"{line!r} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"


@pytest.mark.parametrize("text, expected", [
    (f"a\n{RUNNABLE}\n```bash\nclbench ls   # comment\n\n# only a comment\nclbench --help\n```\n```bash\nno\n```\n",
     [["clbench ls   # comment", "clbench --help"]]),
    ("```bash\nclbench run\n```\n", []),
])
def test_runnable_blocks_are_the_marked_ones_only(text, expected):
    assert runnable_blocks(text) == expected


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md"])
def test_the_quick_start_summary_is_its_published_file_printed(page):
    """The quick start's printed summary (the README's and the guide's) is `format_summary` of the published file it
    names, as it prints it: it changes with the file, never by hand."""
    import json

    from cl_bench.reporting.summary import format_summary

    blocks, block = [], None
    for line in (ROOT / page).read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            blocks, block = (blocks + [block], None) if block is not None else (blocks, [])
        elif block is not None:
            block.append(line)
    blocks = ["".join(b) for b in blocks if any(x.startswith("result file: ") for x in b)]
    assert len(blocks) == 1, f"{page} should print one run summary ending in its result file"
    path = blocks[0].rstrip("\n").splitlines()[-1].removeprefix("result file: ")
    doc = json.loads((ROOT / path).read_text())
    assert blocks[0] == format_summary(doc, path).rstrip("\n") + "\n"


def test_the_pages_generated_sections_are_what_the_published_files_give():
    """docs/leaderboard.md, README.md and results/README.md hold, between their markers, exactly what
    `clbench leaderboard --page ...` makes of results/ now: no number in them is typed or left behind."""
    from cl_bench.reporting.leaderboard import build
    from cl_bench.reporting.page import regenerate

    board = build(ROOT / "results", device="cpu")
    for page in (LEADERBOARD_PAGE, "README.md", "results/README.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        assert regenerate(text, board, page) == text, (
            f"{page}'s generated sections differ from results/: run clbench leaderboard --page {page}")


def test_the_mmer_bench_table_reads_its_report():
    """bench/mmer.py's table: own model, masks on and off, retention over the own model, and the paired verdict."""
    mmer = bench_module("mmer")
    rows = [{"seed": s, "own": {"vision": 0.8, "audio": 0.7},
             "final": {"on": {"text": 0.94, "vision": 0.8 - d, "audio": 0.63}, "off": {"text": 0.94, "vision": 0.6,
                                                                                    "audio": 0.56 + d}},
             "acc": {"on": 0.79 - d, "off": 0.70 + d}, "merge_memory": {"peak_bytes": 2 * 2**20},
             "model_bytes": 7 * 2**20, "merge_seconds": 0.05, "finetune_seconds": 30.0}
            for s, d in enumerate((0.0, 0.01, 0.02))]
    text = mmer.table({"threads": 2, "rows": rows})
    lines = text.splitlines()
    assert lines[0] == "| | vision | audio |"
    assert lines[2] == "| the modality's own fine-tuned model | 80.0% [80.0, 80.0] | 70.0% [70.0, 70.0] |"
    assert lines[3].startswith("| MMER (masks), after the stream | 79.0% [78.") and "| 63.0% [63.0, 63.0] |" in lines[3]
    assert lines[4].startswith("| retention, masks (over own model) | 98.8% [") and "| 90.0% [90.0, 90.0] |" in lines[4]
    assert lines[6].startswith("| retention, masks off (over own model) | 75.0% [75.0, 75.0] |")
    assert "seeds 0, 1, 2, 2 threads" in text and "masks better" in text and "7.0 MiB model" in text
