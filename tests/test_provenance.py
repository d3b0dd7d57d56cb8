"""The provenance section: what made the published files, read off the files (cl_bench.reporting.provenance)."""

import json
import shutil
from pathlib import Path

from cl_bench.reporting import leaderboard
from cl_bench.reporting.provenance import mixed, provenance, provenance_markdown

FIXTURES = Path(__file__).parent / "fixtures"


def _results(tmp_path, version="0.4.0", threads=2, commit="0123456789abcdef", dirty_one=False):
    """The fixture runs, each stamped with a version, a thread count and a commit."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "results/runs", root / "runs", ignore=shutil.ignore_patterns("broken"))
    for i, path in enumerate(sorted(root.rglob("*.json"))):
        doc = json.loads(path.read_text())
        env = doc.setdefault("environment", {})
        env["packages"] = {**env.get("packages", {}), "clbench": version if i else "0.4.0"}
        env["torch_threads"], env["device"] = threads if i else 2, "cpu"
        env["git_commit"] = commit + ("-dirty" if dirty_one and i == 0 else "")
        path.write_text(json.dumps(doc))
    return root


def test_a_uniform_publish_says_what_made_it(tmp_path):
    board = leaderboard.build(_results(tmp_path), device="cpu")
    (p,) = provenance(board)
    assert p.stream == "vision-audio" and p.files == 5 and p.strategies == {"align-only", "full-ft", "joint"}
    assert p.seeds == {0, 1} and p.versions == {"0.4.0"} and p.commits == {"0123456"} and p.threads == {2}
    assert mixed(board) == []
    text = provenance_markdown(board)
    assert "| vision-audio | 5 | 3 | 0, 1 | 0 | 400 | mixtral-tiny | 0.4.0 | 0123456 | 2 |" in text
    assert "5 files" in text and "one clbench version, one thread count" in text


def test_mixed_versions_threads_and_dirty_trees_are_named(tmp_path):
    board = leaderboard.build(_results(tmp_path, version="0.3.0", threads=1, dirty_one=True), device="cpu")
    said = mixed(board)
    assert any("2 clbench versions: 0.3.0, 0.4.0" in s for s in said)
    assert any("2 torch thread counts: 1, 2" in s for s in said)
    assert any("uncommitted changes" in s for s in said)
    assert "the files span 2 clbench versions" in provenance_markdown(board)


def test_files_without_a_commit_are_not_called_committed():
    board = leaderboard.build(FIXTURES / "results", device="cpu")
    assert any("do not record their clbench version or commit" in s for s in mixed(board))
    assert "every file from a committed tree" not in provenance_markdown(board)
