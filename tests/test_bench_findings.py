"""The bench scripts' findings (bench/ablations.py, bench/mmer.py): the sentences the README and
docs/strategies.md carry between their markers, computed from the runs as the tables are, and the pages'
sections they write (cl_bench.reporting.page.write_sections)."""

import pytest

from cl_bench.errors import UsageError
from cl_bench.reporting.page import write_sections
from test_docs import bench_module


def _doc(acc: float, text: float, surgery: float = -0.03) -> dict:
    checkpoints = {"after-alignment": {"text": 0.9}, "after-surgery": {"text": 0.9 + surgery}}
    return {"stream": {"tasks": [{"name": "text"}, {"name": "vision"}]}, "metrics": {"acc": acc},
            "accuracy_matrix": [[0.94, 0.1], [0.9, 0.6], [text, 0.6]], "stages": [{"checkpoints": checkpoints}],
            "config": {"budget": {"steps": 400}}}


def _docs(seeds=(0, 1, 2)) -> dict:
    return {"default (paper)": {s: _doc(0.70 + 0.01 * s, 0.80 + 0.02 * s) for s in seeds},
            "scope=input": {s: _doc(0.71 + 0.01 * s, 0.94, surgery=0.0) for s in seeds},
            "text-mix=0.1": {s: _doc(0.70 + 0.01 * s, 0.80 + 0.02 * s + 0.001 * (2 * s - 1)) for s in seeds},
            "fraction=1.0": {s: _doc(0.60, 0.70) for s in seeds}}


def test_the_ablation_findings_say_what_the_groups_do_against_the_default():
    ablations = bench_module("ablations")
    lines = ablations.findings(_docs())
    assert lines[0] == ("MoExtend at its defaults (3 seeds) ends with final text accuracy 0.820 against the base's "
                        "0.940; its surgery alone moves text validation accuracy by -0.030 before fine-tuning.")
    off = next(x for x in lines if x.startswith("Keeping text tokens off the additions (scope=input):"))
    # +0.12 on text on every seed: a clear difference; ACC +0.01 on every seed: the same difference each time
    assert ("final text accuracy 0.940 against the default's 0.820, higher on 3 of 3 seeds (Holm-adjusted p 0.027: "
            "higher)") in off
    assert "ACC 0.720 against the default's 0.710, higher on 3 of 3 seeds (Holm-adjusted p < 0.001: higher)" in off
    rehearsal = next(x for x in lines if x.startswith("Rehearsing text"))
    assert "(text-mix=0.1)" in rehearsal and "higher on 2 of 3 seeds" in rehearsal and "a tie" in rehearsal
    assert len(lines) == 3  # a variant outside the groups (fraction) is in the table, not in the findings
    table = ablations.table(_docs())
    assert table.splitlines()[0].startswith("| variant | ACC | text (final) | vision (final) |")
    assert "| fraction=1.0 | 0.600 [0.600, 0.600] | 0.700 [0.700, 0.700] |" in table


def test_the_ablation_findings_with_one_seed_test_nothing():
    lines = bench_module("ablations").findings(_docs(seeds=(0,)))
    assert "(one seed: no test)" in lines[1] and "Holm" not in lines[1]


def test_the_mmer_finding_reads_retention_with_and_without_masks():
    mmer = bench_module("mmer")
    rows = [{"seed": s, "own": {"vision": 0.8, "audio": 0.7},
             "final": {"on": {"vision": 0.8 - d, "audio": 0.63}, "off": {"vision": 0.6, "audio": 0.56 + d}},
             "acc": {"on": 0.79 - d, "off": 0.70 + d}} for s, d in enumerate((0.0, 0.01, 0.02))]
    line = mmer.findings_markdown({"rows": rows})
    assert line.startswith("- MMER at its defaults (3 seeds) keeps, of each modality's own fine-tuned model's test "
                           "accuracy, vision 98.8%, audio 90.0% with its masks and vision 75.0%, audio 81.4% without")
    assert "masks better" in line and line.endswith("(100% by construction).\n")


def test_a_bench_writes_the_sections_a_page_has_and_refuses_a_page_with_none(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- ablation-findings:begin (python bench/ablations.py --page README.md) -->\nold\n"
                    "<!-- ablation-findings:end -->\noutro\n")
    written = write_sections(page, {"ablations": "| table |\n", "ablation-findings": "- new\n"}, "ablation findings")
    assert written == ["ablation-findings"]
    assert page.read_text() == ("intro\n<!-- ablation-findings:begin (python bench/ablations.py --page README.md) -->"
                                "\n- new\n<!-- ablation-findings:end -->\noutro\n")
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(UsageError, match="bare.md has no ablation findings markers; put '<!-- ablations:begin -->'"):
        write_sections(bare, {"ablations": "x", "ablation-findings": "y"}, "ablation findings")
    assert bare.read_text() == "no markers\n"
