"""Budgets: one table per stage budget (never ranked together), and budget curves across a stream's budgets.

Hand-made result files (schema 2, so that FLOPs and examples seen are recorded) on vision-audio (text, vision, audio),
two strategies at 100, 200 and 400 steps of 32 (0.25x, 0.5x and the default budget), seeds 0 and 1. Each run's
matrix is R = [[.8 .1 .1] [.7 d .1] [t .3 d]] with seed 0 at d - .05, t - .05 and seed 1 at d + .05, t + .05, so that
over seeds the new-task accuracy (mean of R[1, 1], R[2, 2]) is d and the text retention 100 t / .8:

             100 steps       200 steps       400 steps
  full-ft    d .4, t .6      d .6, t .4      d .8, t .2     retention 75, 50, 25
  lora       d .3, t .7      d .5, t .6      d .7, t .5     retention 87.5, 75, 62.5
"""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cl_bench.analysis.curves import Point, make_curve, matched_target, retention_at
from cl_bench.cli import main
from cl_bench.reporting import figures as plots
from cl_bench.reporting import formats, leaderboard, tables
from cl_bench.reporting.readme import readme_section
from cl_bench.results import pack_items

FIXTURES = Path(__file__).parent / "fixtures"
N_TEST = 20  # test items per task: accuracies are multiples of .05
PLAN = {"full-ft": {100: (0.4, 0.6), 200: (0.6, 0.4), 400: (0.8, 0.2)},
        "lora": {100: (0.3, 0.7), 200: (0.5, 0.6), 400: (0.7, 0.5)}}  # strategy -> steps -> (d, t)


def result_doc(strategy: str, steps: int, seed: int, d: float, t: float, options: dict | None = None) -> dict:
    """A finished schema-2 run of `strategy` at `steps` x 32, its matrix as in the module's docstring."""
    doc = json.loads((FIXTURES / "results/runs/vision-audio/full-ft/mixtral-tiny-seed0-full0.json").read_text())
    shift = -0.05 if seed == 0 else 0.05
    d, t = round(d + shift, 2), round(t + shift, 2)
    R = [[0.8, 0.1, 0.1], [0.7, d, 0.1], [t, 0.3, d]]
    doc["schema_version"] = 2
    doc["config"].update(strategy=strategy, seed=seed, strategy_options=options or {})
    doc["config"]["budget"]["steps"] = steps
    doc["seed"] = seed
    doc["run_key"] = f"{strategy}-{steps}-{json.dumps(options or {})}-{seed}"
    for task in doc["stream"]["tasks"]:
        task["n_test"] = N_TEST
    doc["accuracy_matrix"] = R
    doc["item_results"] = {"rows": [[pack_items([k < round(a * N_TEST) for k in range(N_TEST)]) for a in row]
                                    for row in R]}
    for stage in doc["stages"]:
        stage["training"] = {"steps": steps, "examples": steps * 32, "budget_examples": steps * 32,
                             "budget_ratio": 1.0, "flops": steps * 32 * 1e6}
        stage["memory"] = {"past_train_items": {}, "past_val_items": {}, "task_weight_bytes": 0}
    return doc


def write(root: Path, doc: dict) -> None:
    path = root / "runs" / doc["stream"]["name"] / doc["config"]["strategy"] / f"{doc['run_key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budgets")
    for strategy, budgets in PLAN.items():
        for steps, (d, t) in budgets.items():
            for seed in (0, 1):
                write(root, result_doc(strategy, steps, seed, d, t))
    return root


@pytest.fixture(scope="module")
def board(results):
    return leaderboard.build(results)


# -- one table per budget --------------------------------------------------------------------------------
def test_each_budget_has_its_own_table_the_default_first(board):
    assert [(t.examples, t.main_budget) for t in board.tables] == [(12800, True), (3200, False), (6400, False)]
    assert [t.title for t in board.tables] == ["vision-audio", "vision-audio, 0.25x budget (100 steps x 32)",
                                               "vision-audio, 0.5x budget (200 steps x 32)"]
    assert [t.slug for t in board.tables] == ["vision-audio", "vision-audio--budget-3200", "vision-audio--budget-6400"]
    for t, steps in zip(board.tables, (400, 100, 200)):
        # only runs of its own budget, and labels without "steps=": the table says the budget
        assert {r.config["budget"]["steps"] for row in t.rows for r in row.runs} == {steps}
        assert sorted(r.label for r in t.rows) == ["full-ft", "lora"]
        assert all(len(r.runs) == 2 for r in t.rows)


def test_letters_and_ranks_never_span_budgets(board):
    for t in board.tables:
        # one pair tested per table (its own two rows), never a pair across tables
        assert t.groups.pairs == 1 and set(t.groups.letters) == {"full-ft", "lora"}
        accs = [r.values["acc"][0] for r in t.rows]
        assert accs == sorted(accs, reverse=True)  # ranked within the table
    default = board.tables[0]
    # ACC at 400 steps: full-ft (.2 + .3 + .8) / 3 = .433, lora (.5 + .3 + .7) / 3 = .5: lora first
    assert [r.label for r in default.rows] == ["lora", "full-ft"]
    assert default.rows[1].values["acc"][0] == pytest.approx(1.3 / 3)
    # at 100 steps: full-ft (.6 + .3 + .4) / 3 = .433, lora (.7 + .3 + .3) / 3 = .433 (a tie, by label)
    assert board.tables[1].rows[0].values["acc"][0] == pytest.approx(1.3 / 3)


def test_compare_works_within_one_budget(results):
    runner = CliRunner()
    out = runner.invoke(main, ["compare", "full-ft", "lora", "--results-dir", str(results), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("vision-audio: acc of full-ft (A) and lora (B) over 2 shared seeds")
    out = runner.invoke(main, ["compare", "full-ft", "lora", "--budget", "200x32", "--results-dir", str(results),
                               "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("vision-audio, 0.5x budget (200 steps x 32): acc of full-ft (A) and lora (B)")
    # seed 0: full-ft (.35 + .3 + .55) / 3 = .4, lora (.55 + .3 + .45) / 3 = .433: A - B = -.033 on both seeds
    assert "mean difference A - B: -0.033" in out.output
    out = runner.invoke(main, ["compare", "full-ft", "lora", "--budget", "300", "--results-dir", str(results),
                               "--device", "cpu"])
    assert out.exit_code == 2 and "no runs with 300 examples per stage" in out.output and "6400" in out.output


# -- budget curves ---------------------------------------------------------------------------------------
def test_curve_points_sorted_by_budget(board):
    (c,) = board.curves
    assert c.title == "vision-audio" and c.slug == "vision-audio" and c.retention_name == "text"
    assert c.budgets == [(3200, "100 steps x 32"), (6400, "200 steps x 32"), (12800, "400 steps x 32")]
    assert [curve.label for curve in c.curves] == ["full-ft", "lora"]
    for curve in c.curves:
        assert [p.examples for p in curve.points] == [3200, 6400, 12800]
        assert [p.seen for p in curve.points] == [3200, 6400, 12800]  # recorded examples per stage
        assert [p.flops for p in curve.points] == pytest.approx([2 * 3200e6, 2 * 6400e6, 2 * 12800e6])
        d, t = zip(*(PLAN[curve.label][s] for s in (100, 200, 400)))
        assert [p.new_acc for p in curve.points] == pytest.approx(d)
        assert [p.retention for p in curve.points] == pytest.approx([100 * x / 0.8 for x in t])
        assert [p.acc for p in curve.points] == pytest.approx([(x + 0.3 + y) / 3 for x, y in zip(t, d)])
        for p in curve.points:  # two seeds: the interval is their two values
            assert p.retention_low == pytest.approx(100 * (p.retention * 0.8 / 100 - 0.05) / 0.8)
            assert p.retention_high == pytest.approx(100 * (p.retention * 0.8 / 100 + 0.05) / 0.8)


def test_matched_accuracy_retention(board):
    (c,) = board.curves
    # the target: the lower of the two curves' best new-task accuracies, min(.8, .7) = .7
    assert c.target == pytest.approx(0.7)
    # full-ft reaches .7 halfway from d = .6 (50%) to d = .8 (25%): 37.5; lora at its last point: 62.5
    assert c.matched["full-ft"] == pytest.approx(37.5) and c.matched["lora"] == pytest.approx(62.5)


def _pt(examples, new_acc, retention) -> Point:
    return Point(examples, math.nan, math.nan, math.nan, new_acc, retention, math.nan, math.nan)


def test_retention_at_interpolates_the_first_crossing_and_never_extrapolates():
    curve = make_curve("x", "x", [_pt(400, 0.8, 30.0), _pt(100, 0.2, 90.0), _pt(200, 0.5, 60.0)])
    assert [p.examples for p in curve.points] == [100, 200, 400]
    # .35 lies between .2 (90) and .5 (60): w = .15 / .3 = .5 -> 75
    assert retention_at(curve, 0.35) == pytest.approx(75.0)
    # .7 between .5 (60) and .8 (30): w = 2/3 -> 40
    assert retention_at(curve, 0.7) == pytest.approx(40.0)
    assert retention_at(curve, 0.2) == pytest.approx(90.0) and retention_at(curve, 0.8) == pytest.approx(30.0)
    assert retention_at(curve, 0.9) is None and retention_at(curve, 0.1) is None  # outside: not extrapolated
    # not monotone: up to .6, down to .4, up to .9; .5 is crossed first between the first two budgets
    wavy = make_curve("w", "w", [_pt(1, 0.4, 100.0), _pt(2, 0.6, 80.0), _pt(3, 0.4, 70.0), _pt(4, 0.9, 20.0)])
    assert retention_at(wavy, 0.5) == pytest.approx(90.0)
    assert retention_at(wavy, 0.7) == pytest.approx(70.0 - 50.0 * 0.3 / 0.5)  # only the last pair reaches .7
    # a point with no defined accuracy is skipped, not a gap
    holed = make_curve("h", "h", [_pt(1, 0.2, 90.0), _pt(2, math.nan, 10.0), _pt(3, 0.6, 50.0)])
    assert retention_at(holed, 0.4) == pytest.approx(70.0)
    with pytest.raises(ValueError, match="two points at 1 examples"):
        make_curve("d", "d", [_pt(1, 0.2, 90.0), _pt(1, 0.3, 80.0)])


def test_matched_target_is_the_lowest_best_and_ignores_single_points():
    a = make_curve("a", "a", [_pt(1, 0.2, 90.0), _pt(2, 0.6, 50.0)])
    b = make_curve("b", "b", [_pt(1, 0.3, 95.0), _pt(2, 0.5, 85.0)])
    single = make_curve("s", "s", [_pt(1, 0.1, 99.0)])
    assert matched_target([a, b, single]) == pytest.approx(0.5)
    assert matched_target([single]) is None and matched_target([]) is None
    high = make_curve("h", "h", [_pt(1, 0.55, 80.0), _pt(2, 0.7, 60.0)])  # already above .5 at its smallest
    assert matched_target([a, b, high]) == pytest.approx(0.5) and retention_at(high, 0.5) is None


def test_recipe_pairs_only_where_both_ran_with_equal_examples(tmp_path):
    for seed in (0, 1):
        write(tmp_path, result_doc("moextend", 200, seed, 0.5, 0.5, {"phases": "budget"}))
        write(tmp_path, result_doc("moextend", 400, seed, 0.6, 0.4, {"phases": "budget"}))
        write(tmp_path, result_doc("full-ft", 400, seed, 0.7, 0.3, {"align_fraction": 0.4}))
        write(tmp_path, result_doc("full-ft", 200, seed, 0.6, 0.3))  # no alignment phase: not the recipe
    (c,) = leaderboard.build(tmp_path).curves
    assert [(p.examples, p.a[0], p.b[0]) for p in c.pairs] == [(12800, "moextend", "full-ft (align_fraction=0.4)")]
    pair = c.pairs[0]
    assert pair.a[1].retention == pytest.approx(50.0) and pair.b[1].retention == pytest.approx(37.5)
    md = formats.to_markdown(leaderboard.build(tmp_path))
    assert "Matched recipes" in md and "| 12,800 | moextend | 0.433 [0.400, 0.467] | 50.0 [43.7, 56.2] | full-ft " \
        "(align_fraction=0.4) | 0.433 [0.400, 0.467] | 37.5 [31.2, 43.7] |" in md


def test_a_pair_at_one_budget_has_a_section_without_curves(tmp_path):
    write(tmp_path, result_doc("moextend", 400, 0, 0.6, 0.4, {"phases": "budget"}))
    write(tmp_path, result_doc("full-ft", 400, 0, 0.7, 0.3, {"align_fraction": 0.4}))
    board = leaderboard.build(tmp_path)
    (c,) = board.curves
    assert c.curves == [] and c.target is None and len(c.pairs) == 1
    md = formats.to_markdown(board)
    assert "## vision-audio: budget curves" in md and "Matched recipes" in md and "Matched accuracy" not in md


# -- output ------------------------------------------------------------------------------------------------
def test_markdown_and_html_have_a_budget_curves_section(board):
    md = formats.to_markdown(board)
    assert md.count("## vision-audio: budget curves") == 1
    # after the stream's last table, before nothing else of it
    assert md.index("## vision-audio, 0.5x budget (200 steps x 32)") < md.index("## vision-audio: budget curves")
    header = ("| Strategy | ACC, 100 steps x 32 (0.25x) | Text ret. %, 100 steps x 32 (0.25x) | ACC, 200 steps x 32 "
              "(0.5x) | Text ret. %, 200 steps x 32 (0.5x) | ACC, 400 steps x 32 (1x) | Text ret. %, 400 steps x 32 "
              "(1x) | Text ret. % at new-task acc. 0.700 |")
    assert header in md
    line = next(x for x in md.splitlines() if x.startswith("| full-ft | 0.433 [0.400, 0.467] | 75.0 [68.8, 81.2]"))
    assert line.endswith("| 37.5 |")
    assert "| lora |" in md and md.splitlines()[md.splitlines().index(header) + 3].endswith("| 62.5 |")
    assert "reaches 0.700, the highest that every strategy here reaches" in md
    page = formats.to_html(board, {"vision-audio": {"budget-curves.png": b"\x89PNG curves",
                                                    "pareto.png": b"\x89PNG pareto"}})
    assert page.count("vision-audio: budget curves</h2>") == 1
    # the curves' figure in their section, after the table's own figures
    assert page.index("alt='pareto.png'") < page.index("budget curves</h2>") < page.index("alt='budget-curves.png'")
    readme = readme_section(board)  # the docs' leaderboard page summarises the main budget, naming the others
    assert "**vision-audio** (" in readme and "0.5x budget" not in readme.split("Other budgets")[0]
    assert "Other budgets, in the full leaderboard with the budget curves: vision-audio, 0.25x budget" in readme


def test_no_section_with_one_budget(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    board = leaderboard.build(Path("results"))
    assert board.curves == [] and "budget curves" not in formats.to_markdown(board)


def test_budget_curves_figure_panels_and_bands_stay_in_range(board):
    (c,) = board.curves
    fig = plots.budget_curves_figure(c)
    axes = fig.axes
    assert len(axes) == 4  # ACC and retention, against examples and against FLOPs
    assert [ax.get_xscale() for ax in axes] == ["log"] * 4
    assert "examples" in axes[0].get_xlabel() and "FLOPs" in axes[2].get_xlabel()
    assert "retention" in axes[1].get_ylabel()
    for ax in axes:
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == [
            "full-ft", "lora"]
        for band in ax.collections:  # intervals as bands, inside [0, 1] for ACC and >= 0 for retention
            ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
            assert ys.min() >= 0 and (ax not in (axes[0], axes[2]) or ys.max() <= 1)
    x = axes[0].get_lines()[0].get_xdata()
    assert list(x) == [3200, 6400, 12800]
    plots._pyplot().close("all")
    # without recorded FLOPs: only the examples row
    bare = replace(c, curves=[replace(k, points=tuple(replace(p, flops=math.nan) for p in k.points))
                              for k in c.curves])
    assert len(plots.budget_curves_figure(bare).axes) == 2
    plots._pyplot().close("all")
    assert plots.budget_curves(c)[:8] == b"\x89PNG\r\n\x1a\n"  # what `clbench plot` writes


@pytest.mark.slow
def test_plot_writes_the_budget_curves_beside_the_other_figures(results, tmp_path):
    out = CliRunner().invoke(main, ["plot", "--results-dir", str(results), "--out-dir", str(tmp_path),
                                    "--device", "cpu"])
    assert out.exit_code == 0, out.output
    path = tmp_path / "vision-audio" / "budget-curves.png"
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "vision-audio" / "pareto.png").exists()
    assert (tmp_path / "vision-audio--budget-3200" / "pareto.png").exists()  # each budget's own figures
    assert not (tmp_path / "vision-audio--budget-3200" / "budget-curves.png").exists()


def test_one_budget_reached_two_ways_is_one_table_with_telling_labels(tmp_path):
    """400 x 32 and 800 x 16 are the same budget (12,800 examples per stage): one table, its rows told apart."""
    for seed in (0, 1):
        write(tmp_path, result_doc("full-ft", 400, seed, 0.6, 0.4))
        doc = result_doc("full-ft", 800, seed, 0.7, 0.3)
        doc["config"]["budget"]["batch_size"] = 16
        write(tmp_path, doc)
    (t,) = leaderboard.build(tmp_path).tables
    assert t.examples == 12800 and t.budget == "12,800 examples" and t.title == "vision-audio"
    assert sorted(r.label for r in t.rows) == ["full-ft (batch_size=16, steps=800)", "full-ft (batch_size=32, steps=400)"]
    assert t.groups.pairs == 1
    # a field's last part where it tells it apart, else as many parts as it takes
    assert leaderboard._short_names(["budget.steps", "pretrain.steps", "strategy_options.lr"]) == {
        "budget.steps": "budget.steps", "pretrain.steps": "pretrain.steps", "strategy_options.lr": "lr"}


def test_orders_are_compared_at_one_budget_only(tmp_path):
    for seed in (0, 1):
        write(tmp_path, result_doc("full-ft", 400, seed, 0.8, 0.2))
        write(tmp_path, result_doc("full-ft", 200, seed, 0.6, 0.4))
        doc = result_doc("full-ft", 200, seed, 0.5, 0.4)  # audio learnt before vision
        doc["stream"]["tasks"] = [doc["stream"]["tasks"][i] for i in (0, 2, 1)]
        doc["stream"]["order"], doc["stream"]["default_order"] = ["audio", "vision"], ["vision", "audio"]
        doc["run_key"] += "-rev"
        write(tmp_path, doc)
    board = leaderboard.build(tmp_path)
    assert [t.title for t in board.tables] == [
        "vision-audio", "vision-audio, 0.5x budget (200 steps x 32)",
        "vision-audio, order audio > vision, 0.5x budget (200 steps x 32)"]
    assert [t.main_budget for t in board.tables] == [True, False, True]  # the only budget of that order
    (effect,) = tables.order_effects(board)  # at 200 steps; the 400-step runs have one order only
    assert effect.stream == "vision-audio, 0.5x budget" and effect.orders == [("vision", "audio"), ("audio", "vision")]
    assert effect.acc == [pytest.approx((0.4 + 0.3 + 0.6) / 3), pytest.approx((0.4 + 0.3 + 0.5) / 3)]
    assert [c.title for c in board.curves] == ["vision-audio"]  # the other order has one budget: no curve
