"""The scale axis: the larger presets, the rank agreement between two sizes, and the leaderboard's Scale table.

Hand-made result files on vision-audio at two model sizes, seeds 0 and 1, each run's matrix
R = [[.8 .1 .1] [.7 .5 .1] [a a a]] so that its ACC (the mean of the last row) is a; seed 1 is seed 0 + .02:

                 mixtral-tiny (1.78M)   mixtral-small (20.1M)
  full-ft        .60, .62               .50, .52
  lora           .50, .52               .70, .72
  align-only     .30, .32               .30, .32
  moextend       .40, .42               -               (at one size: in the table, not in tau)

The sizes rank full-ft and lora opposite ways: one discordant pair of three, tau = (2 - 1) / 3.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from cl_bench.analysis.rank_agreement import flipped_pairs, rank_agreement, tau_b
from cl_bench.reporting import formats, leaderboard
from cl_bench.results import pack_items

FIXTURES = Path(__file__).parent / "fixtures"
N_TEST = 50  # accuracies are multiples of .02
PARAMETERS = {"mixtral-tiny": 1_783_936, "mixtral-small": 20_105_472}
PLAN = {"mixtral-tiny": {"full-ft": 0.60, "lora": 0.50, "align-only": 0.30, "moextend": 0.40},
        "mixtral-small": {"full-ft": 0.50, "lora": 0.70, "align-only": 0.30}}


# -- presets ---------------------------------------------------------------------------------------------------
def test_scale_presets_grow_the_default_family_and_leave_tiny_as_it_was():
    from cl_bench.models.lm import PRESETS, preset_config
    from cl_bench.run.plan import meta_lm

    assert PRESETS["mixtral-tiny"] == ("mixtral", {
        "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "tie_word_embeddings": False, "intermediate_size": 256,
        "num_local_experts": 4, "num_experts_per_tok": 2})
    shapes = {}
    for name in ("mixtral-tiny", "mixtral-small", "mixtral-medium"):
        c = preset_config(name, vocab_size=100)
        assert c.model_type == "mixtral" and c.num_experts_per_tok == 2
        assert c.hidden_size % c.num_attention_heads == 0 and c.num_attention_heads % c.num_key_value_heads == 0
        n = sum(p.numel() for p in meta_lm(c).parameters())
        shapes[name] = (c.hidden_size, c.num_hidden_layers, c.num_local_experts, n)
    assert shapes["mixtral-small"][:3] == (160, 6, 8) and shapes["mixtral-medium"][:3] == (192, 8, 8)
    # each size about 4x / 2x the one before (1.8M, 7.8M, 15.1M with this vocabulary)
    assert shapes["mixtral-tiny"][3] < shapes["mixtral-small"][3] / 4 < shapes["mixtral-medium"][3] / 7


# -- rank agreement --------------------------------------------------------------------------------------------
def test_identical_rankings_agree_fully():
    a = {"x": [0.9, 0.91], "y": [0.5, 0.52], "z": [0.1, 0.12]}
    b = {"x": [0.7, 0.72], "y": [0.4, 0.41], "z": [0.05, 0.06]}  # other values, the same order
    g = rank_agreement(a, b)
    assert g.tau == 1.0 and g.flips == () and g.strategies == ("x", "y", "z")
    assert (g.low, g.high) == (1.0, 1.0)  # no resample can reorder values this far apart


def test_one_swapped_pair_is_named_and_tau_is_as_by_hand():
    a = {"a": [4.0], "b": [3.0], "c": [2.0], "d": [1.0]}
    b = {"a": [4.0], "b": [2.0], "c": [3.0], "d": [1.0]}
    g = rank_agreement(a, b)
    # 6 pairs, 5 concordant and (b, c) discordant: (5 - 1) / 6
    assert g.tau == pytest.approx(4 / 6)
    assert g.flips == (("b", "c"),)
    # given in another order the pair is still named as size A ranks it
    g2 = rank_agreement({k: a[k] for k in "dcba"}, b)
    assert g2.flips == (("b", "c"),) and g2.tau == pytest.approx(4 / 6)


def test_the_interval_lies_in_minus_one_one_and_spreads_with_overlapping_seeds():
    rng = np.random.default_rng(3)
    a = {f"s{i}": (0.5 + 0.01 * i + 0.1 * rng.standard_normal(5)).tolist() for i in range(6)}
    b = {f"s{i}": (0.5 - 0.01 * i + 0.1 * rng.standard_normal(5)).tolist() for i in range(6)}
    g = rank_agreement(a, b, n_resamples=500)
    assert -1.0 <= g.low < g.high <= 1.0
    assert g.tau == pytest.approx(sps.kendalltau([np.mean(a[k]) for k in a], [np.mean(b[k]) for k in a]).statistic)
    assert rank_agreement(a, b, n_resamples=500) == g  # seeded: the same interval every time


def test_reversed_ranking_and_missing_strategies():
    a = {"x": [3.0], "y": [2.0], "z": [1.0], "only-a": [9.0]}
    b = {"x": [1.0], "y": [2.0], "z": [3.0], "only-b": [0.0], "empty": []}
    g = rank_agreement(a, b)
    assert g.strategies == ("x", "y", "z")  # at both sizes only
    assert g.tau == -1.0 and (g.low, g.high) == (-1.0, -1.0)
    assert g.flips == (("x", "y"), ("x", "z"), ("y", "z"))
    one = rank_agreement({"x": [1.0]}, {"x": [2.0]})
    assert math.isnan(one.tau) and math.isnan(one.low) and one.flips == ()


def test_ties_flip_nothing():
    assert flipped_pairs([1.0, 1.0, 0.0], [0.0, 1.0, 0.5], ["a", "b", "c"]) == [("a", "c")]


def test_vectorised_tau_b_is_scipys_row_by_row():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 6)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(50, 6)).astype(float)
    got = tau_b(x, y)
    want = np.array([sps.kendalltau(x[i], y[i]).statistic for i in range(50)])
    assert np.allclose(got, want, equal_nan=True)
    assert np.isnan(tau_b(np.ones((1, 3)), np.arange(3.0)[None]))[0]


# -- the leaderboard's Scale table -----------------------------------------------------------------------------
def result_doc(model: str, strategy: str, seed: int, acc: float) -> dict:
    doc = json.loads((FIXTURES / "results/runs/vision-audio/full-ft/mixtral-tiny-seed0-full0.json").read_text())
    a = round(acc + 0.02 * seed, 2)
    R = [[0.8, 0.1, 0.1], [0.7, 0.5, 0.1], [a, a, a]]
    doc["config"].update(strategy=strategy, seed=seed, model=model)
    doc["base_model"].update(preset=model, parameters=PARAMETERS[model])
    doc["seed"] = seed
    doc["run_key"] = f"{model}-{strategy}-{seed}"
    for task in doc["stream"]["tasks"]:
        task["n_test"] = N_TEST
    for stage in doc["stages"]:  # a run's cost adds up to its base's parameters
        stage["cost"]["total"] = PARAMETERS[model] + stage["cost"]["added"]
    doc["accuracy_matrix"] = R
    doc["item_results"] = {"rows": [[pack_items([k < round(v * N_TEST) for k in range(N_TEST)]) for v in row]
                                    for row in R]}
    return doc


@pytest.fixture(scope="module")
def scale_results(tmp_path_factory):
    """A results directory with runs at two model sizes."""
    root = tmp_path_factory.mktemp("scale")
    for model, accs in PLAN.items():
        for strategy, acc in accs.items():
            for seed in (0, 1):
                doc = result_doc(model, strategy, seed, acc)
                path = root / "runs/vision-audio" / strategy / f"{doc['run_key']}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def board(scale_results):
    return leaderboard.build(scale_results)


def test_scale_table_has_acc_per_size_and_the_flipped_pair(board):
    assert not board.skipped
    (s,) = board.scale
    assert s.title == "vision-audio" and s.models == ["mixtral-tiny", "mixtral-small"]  # smallest first
    by_label = {r.label: r for r in s.rows}
    assert set(by_label) == {"full-ft", "lora", "align-only", "moextend"}  # labels without "model="
    assert by_label["lora"].acc["mixtral-small"][0] == pytest.approx(0.71)
    assert by_label["full-ft"].acc["mixtral-tiny"][0] == pytest.approx(0.61)
    assert "mixtral-small" not in by_label["moextend"].acc
    assert [r.label for r in s.rows] == ["full-ft", "lora", "moextend", "align-only"]  # by the smallest's ACC
    ((a, b, g),) = s.agreement
    assert (a, b) == ("mixtral-tiny", "mixtral-small")
    assert set(g.strategies) == {"full-ft", "lora", "align-only"}
    assert g.tau == pytest.approx(1 / 3) and g.flips == (("full-ft", "lora"),)
    # seeds .02 apart and strategies .1 or more: no resample reorders them, so the interval is the point
    assert g.low == pytest.approx(1 / 3) and g.high == pytest.approx(1 / 3)


def test_scale_section_in_markdown_and_html(board):
    md = formats.to_markdown(board)
    lines = md.splitlines()
    i = lines.index("### vision-audio: scale")
    assert lines[i + 2] == "| Strategy | ACC, mixtral-tiny (1.78M) | ACC, mixtral-small (20.11M) |"
    assert lines[i + 4].startswith("| full-ft | 0.610 [") and lines[i + 6] == "| moextend | 0.410 [0.400, 0.420] | - |"
    assert ("| mixtral-tiny vs mixtral-small | 3 | 0.33 [0.33, 0.33] | full-ft > lora at mixtral-tiny, "
            "lora > full-ft at mixtral-small |") in lines
    page = formats.to_html(board)
    assert "vision-audio: scale</h3>" in page and "Kendall&#x27;s tau [interval]" in page


def test_one_size_has_no_scale_section():
    board = leaderboard.build(FIXTURES / "results")
    assert board.tables and board.scale == []
    assert ": scale" not in formats.to_markdown(board)


def test_the_readme_gets_the_scale_section_between_its_markers(scale_results, tmp_path):
    """`--page` is repeatable and each page gets the generated sections it has markers for: the README its scale
    table and Kendall's tau from the files, the docs page its leaderboard."""
    from click.testing import CliRunner

    from cl_bench.cli import main

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- scale:begin (clbench publish --page README.md) -->\nold\n<!-- scale:end -->\n\nend\n")
    docs = tmp_path / "leaderboard.md"
    docs.write_text("<!-- leaderboard:begin -->\nold\n<!-- leaderboard:end -->\n")
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(scale_results), "--device", "cpu",
                                    "--page", str(readme), "--page", str(docs)])
    assert out.exit_code == 0, out.output
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- scale:end -->\n\nend\n")
    assert "### vision-audio: scale" in text and "| mixtral-tiny vs mixtral-small | 3 | 0.33 [0.33, 0.33] |" in text
    assert "| Strategy | Group | ACC |" not in text  # the README has no leaderboard markers
    assert "old" not in docs.read_text() and "| Strategy | Group | ACC |" in docs.read_text()
    assert "regenerated the scale section(s) of" in out.output


def test_a_page_without_markers_is_refused_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from cl_bench.cli import main

    page = tmp_path / "page.md"
    page.write_text("no markers\n")
    out = CliRunner().invoke(main, ["publish", "--results-dir", str(tmp_path / "none"), "--page", str(page)])
    assert out.exit_code == 2 and "has no section markers" in out.output and "docs/leaderboard.md" in out.output
    page.write_text("<!-- scale:begin -->\nno end marker\n")
    out = CliRunner().invoke(main, ["publish", "--results-dir", str(tmp_path / "none"), "--page", str(page)])
    assert out.exit_code == 2 and "'<!-- scale:end -->'" in out.output


def test_without_two_sizes_the_scale_section_says_so():
    from cl_bench.reporting.page import scale_section

    assert scale_section(leaderboard.build(FIXTURES / "results")).startswith("No stream has runs at more than one")
