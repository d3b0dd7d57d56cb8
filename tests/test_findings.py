"""The docs' findings: sentences computed from the board (letter groups, pre-named paired comparisons), spliced
between their markers by `clbench publish --page` / `clbench leaderboard --page`."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench.analysis.stats import paired_comparison
from cl_bench.cli import main
from cl_bench.reporting import leaderboard
from cl_bench.reporting.findings import FINDINGS_BEGIN, FINDINGS_END, compare, findings, main_table

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def board():
    return leaderboard.build(FIXTURES / "results")


def test_the_best_strategy_and_its_ties_come_from_the_letter_groups(board):
    t = main_table(board, "vision-audio")
    best = t.groups.order[0]
    first = findings(board, "vision-audio", pairs=())[0]
    assert first.startswith(f"Highest mean ACC on vision-audio: {best} (")
    tied = [n for n in t.groups.order[1:] if not t.groups.differ(best, n)]
    below = [n for n in t.groups.order[1:] if t.groups.differ(best, n)]
    n = t.groups.pairs
    family = f"paired t-tests over shared seeds, Holm-adjusted over {n} pair{'' if n == 1 else 's'}"
    assert n > 0
    if tied:
        assert f"Not significantly different from it (they share its letter; {family}): {', '.join(tied)}" in first
        assert (f"; significantly below it: {', '.join(below)}." in first) == bool(below)
    else:
        assert f"Every other strategy is significantly below it ({family})." in first
    retention = findings(board, "vision-audio", pairs=())[1]
    means = {r.label: r.values["retention:text"][0] for r in t.rows}
    top = [label for label, m in sorted(means.items(), key=lambda x: -x[1]) if m == max(means.values())]
    assert f"highest {', '.join(top)} (" in retention and f"lowest {min(means, key=means.get)} (" in retention


def test_a_named_comparison_is_the_paired_test_over_shared_seeds(board):
    t = main_table(board, "vision-audio")
    rows = {r.label: r for r in t.rows}
    a, b = rows["joint"].per_seed["acc"], rows["full-ft"].per_seed["acc"]
    shared = sorted(set(a) & set(b))
    p = paired_comparison([a[s] for s in shared], [b[s] for s in shared])
    sentence = compare(t, "joint", "full-ft")
    assert sentence.startswith(f"joint against full-ft on ACC: {p.mean_a:.3f} against {p.mean_b:.3f}, difference "
                               f"{p.mean_diff:+.3f} [{p.low:+.3f}, {p.high:+.3f}] (paired t-test over {len(shared)} "
                               f"shared seeds, p = {p.p_value:.2g}")
    text = compare(t, "joint", "full-ft", "retention:text")
    assert text.startswith("joint against full-ft on Text ret. %: ") and ", difference +" in text
    assert sentence.endswith("a tie (no difference detected at p < 0.05).") == (not p.p_value < 0.05)
    assert "fewer than 2 shared seeds (1), so no test." in compare(t, "align-only", "full-ft")
    assert compare(t, "moextend", "full-ft") is None  # no such row: no sentence
    assert findings(board, "no-such-stream") == []


def test_the_page_gets_its_findings_between_their_markers(tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n<!-- leaderboard:begin (clbench publish --page docs/leaderboard.md) -->\nold\n"
                    f"<!-- leaderboard:end -->\n\n## Findings\n\n{FINDINGS_BEGIN}\nold findings\n{FINDINGS_END}\n")
    out = CliRunner().invoke(main, ["leaderboard", "--page", str(page), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    text = page.read_text()
    assert "old findings" not in text and "- Highest mean ACC on vision-audio: " in text
    assert text.index(FINDINGS_BEGIN) < text.index("- Highest mean ACC") < text.index(FINDINGS_END)


def test_the_findings_name_who_is_below_the_best_and_every_row_at_the_highest_retention(board):
    """On the fixture every row shares joint's letter and one row has the highest retention; here full-ft is made
    significantly below joint and joint's text retention equal to align-only's, and the sentences say so."""
    import dataclasses
    import math

    t = main_table(board, "vision-audio")
    adjusted = {pair: (0.001 if set(pair) == {"joint", "full-ft"} else p) for pair, p in t.groups.adjusted.items()}
    t.groups = dataclasses.replace(t.groups, adjusted=adjusted)
    rows = {r.label: r for r in t.rows}
    rows["joint"].values["retention:text"] = rows["align-only"].values["retention:text"]
    first, retention = findings(board, "vision-audio", pairs=())[:2]
    # align-only has one seed: its pairs are untested, so the family is the one pair joint / full-ft
    assert first.endswith("Holm-adjusted over 1 pair): align-only; significantly below it: full-ft.")
    assert not math.isnan(rows["align-only"].values["retention:text"][0])
    assert retention.startswith("Text retention (text accuracy after the last stage over the base's, %): highest "
                                "joint, align-only (100.0") and ", each), lowest full-ft (" in retention


def _full_ft_rows(tmp_path, options_by_name):
    """The fixture's results with its full-ft runs replaced by one row per entry of `options_by_name` (name ->
    strategy options), seeds 0 and 1 each, their accuracy matrices apart so that no file repeats another."""
    import json
    import shutil

    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", root)
    folder = root / "runs" / "vision-audio" / "full-ft"
    originals = sorted(folder.glob("*.json"))
    docs = [json.loads(p.read_text()) for p in originals]
    for p in originals:
        p.unlink()
    for i, (name, options) in enumerate(options_by_name.items()):
        for doc in docs:
            d = json.loads(json.dumps(doc))
            d["config"]["strategy_options"] = options
            d["run_key"] = f"full-ft-{name}"
            d["accuracy_matrix"][-1][1] = round(d["accuracy_matrix"][-1][1] + 0.05 * i, 3)
            (folder / f"mixtral-tiny-seed{d['seed']}-{name}.json").write_text(json.dumps(d))
    return leaderboard.build(root)


def test_a_named_comparison_takes_the_strategys_row_at_its_defaults_beside_its_variants(tmp_path):
    """After a sweep with --set, a strategy has a row per recipe: the findings compare the one at its defaults,
    named by its label, as `clbench compare` does."""
    import dataclasses

    from cl_bench.api.strategy import strategy_class
    from cl_bench.reporting.tables import find_row

    defaults = dataclasses.asdict(strategy_class("full-ft").Config())
    board = _full_ft_rows(tmp_path, {"default": defaults, "variant": {**defaults, "align_fraction": 0.4}})
    t = main_table(board, "vision-audio")
    assert sorted(r.label for r in t.rows if r.strategy == "full-ft") == [
        "full-ft (align_fraction=0.0)", "full-ft (align_fraction=0.4)"]
    row = find_row(t, "full-ft")
    assert row.label == "full-ft (align_fraction=0.0)" and {r.doc["run_key"] for r in row.runs} == {"full-ft-default"}
    sentence = compare(t, "joint", "full-ft")
    assert sentence.startswith("joint against full-ft (align_fraction=0.0) on ACC: ")
    said = findings(board, "vision-audio", pairs=(("joint", "full-ft"),))
    assert sentence in said and any(s.startswith("joint against full-ft (align_fraction=0.0) on Text ret. %: ")
                                    for s in said)
    assert find_row(t, "full-ft (align_fraction=0.4)").label == "full-ft (align_fraction=0.4)"


def test_a_named_comparison_with_no_row_at_the_defaults_says_why_it_is_not_made(tmp_path):
    """Rows of a strategy none of which is at its defaults (runs of an earlier version's defaults, say): the
    findings say the comparison was not made and list the rows, instead of dropping it unsaid."""
    board = _full_ft_rows(tmp_path, {"earlier": {"lr": 3e-4}, "variant": {"lr": 1e-3}})
    t = main_table(board, "vision-audio")
    said = findings(board, "vision-audio", pairs=(("joint", "full-ft"),))
    sentence = compare(t, "joint", "full-ft")
    assert sentence.startswith("joint against full-ft: not compared, strategy 'full-ft' has 2 rows with different "
                               "options on stream 'vision-audio' (none at its defaults): ")
    assert "'full-ft (lr=0.0003)'" in sentence and "'full-ft (lr=0.001)'" in sentence and sentence.endswith("'.")
    assert sentence in said and not any("on Text ret. %" in s for s in said)
    from cl_bench.reporting.tables import find_row

    with pytest.raises(ValueError, match="none at its defaults.*; pass one of these labels instead"):
        find_row(t, "full-ft")
