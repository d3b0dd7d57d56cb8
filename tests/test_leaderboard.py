"""The leaderboard and the figures, from fixture result files (tests/fixtures/results).

Fixture runs on the vision-audio stream (tasks text, vision, audio):
  full-ft seed 0  R = [[.9 .1 .1] [.5 .6 .1] [.3 .4 .7]]
  full-ft seed 1  R = [[.9 .1 .1] [.7 .8 .1] [.5 .6 .9]]
  align-only 0    R = [[.9 .1 .1] [.9 .4 .1] [.9 .4 .5]]
  joint 0 and 1   R = [[.9 .1 .1] [.85 .9 .1] [.85 .85 .95]]
and four broken files: truncated JSON, a newer schema, a failed run, no accuracy matrix.
"""

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from cl_bench.reporting import formats, leaderboard, tables
from cl_bench.reporting.collect import Unit
from cl_bench.reporting.readme import README_BEGIN, README_END
from cl_bench.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def board(monkeypatch):
    monkeypatch.chdir(FIXTURES)  # paths in the table are then relative: results/runs/...
    return leaderboard.build(Path("results"))


def row(board, label):
    (t,) = board.tables
    return next(r for r in t.rows if r.label == label)


def test_values_against_hand_computed_means_and_intervals(board):
    ft = row(board, "full-ft")
    # ACC per seed (.3+.4+.7)/3 = .4667 and (.5+.6+.9)/3 = .6667; with two seeds the expanded percentile
    # bootstrap's level is ~1 - 1e-70, so its interval is the two values (the Student t one was .567 ± 1.271)
    assert ft.values["acc"][0] == pytest.approx(0.566667, abs=1e-6)
    assert ft.ci["acc"] == (pytest.approx(1.4 / 3), pytest.approx(2.0 / 3)) and ft.values["acc"][1] == pytest.approx(0.1)
    assert ft.per_seed["acc"] == {Unit(0, 0): pytest.approx(1.4 / 3), Unit(0, 1): pytest.approx(2.0 / 3)}
    assert ft.ci["retention:text"] == (pytest.approx(100 * 0.3 / 0.9), pytest.approx(100 * 0.5 / 0.9))  # inside [0, 100]
    # BWT: ((.3-.9) + (.4-.6)) / 2 = -.4 and ((.5-.9) + (.6-.8)) / 2 = -.3
    assert ft.values["bwt"][0] == pytest.approx(-0.35)
    # forgetting: ((.9-.3) + (.6-.4)) / 2 = .4 and ((.9-.5) + (.8-.6)) / 2 = .3
    assert ft.values["forgetting"][0] == pytest.approx(0.35)
    # FWT vs base: only j = 2 counts: R[1, 2] - R[0, 2] = 0
    assert ft.values["fwt"][0] == pytest.approx(0.0)
    # intransigence vs joint's diagonal a* = (.9, .95): ((.9-.6) + (.95-.7)) / 2 = .275, ((.9-.8) + (.95-.9)) / 2 = .075
    assert ft.values["intransigence"][0] == pytest.approx(0.175)
    # retention: text 100 * .3/.9, 100 * .5/.9; vision 100 * .4/.6, 100 * .6/.8
    assert ft.values["retention:text"][0] == pytest.approx(100 * (0.3 + 0.5) / 0.9 / 2)
    assert ft.values["retention:vision"][0] == pytest.approx(100 * (0.4 / 0.6 + 0.6 / 0.8) / 2)
    assert ft.values["trainable"][0] == 1_000_000 and ft.values["train_seconds"][0] == pytest.approx(74.0)
    # seconds per step, mean over stages: (30 + 40) / 800 = .0875 and (34 + 44) / 800 = .0975
    assert ft.values["step_seconds"][0] == pytest.approx(0.0925)
    single = row(board, "align-only")
    assert single.values["acc"][0] == pytest.approx(0.6) and math.isnan(single.values["acc"][1])  # one seed: no CI
    assert single.values["trainable"][0] == 110_000  # the largest stage
    joint = row(board, "joint")
    assert joint.values["intransigence"][0] == pytest.approx(0.0) and joint.values["acc"][1] == pytest.approx(0.0)
    # joint - full-ft ACC on seeds 0, 1: .4167, .2167; paired t p = .195: one group (align-only, one seed: untested)
    assert [r.text["group"] for r in board.tables[0].rows] == ["a", "a", "a"] and board.tables[0].groups.pairs == 1


def test_intervals_are_scipy_bootstrap(board):
    """The train-time interval of full-ft against scipy.stats.bootstrap, called directly."""
    ft = row(board, "full-ft")
    x = np.array([r.doc["timing"]["train_seconds"] for r in ft.runs])
    z = math.sqrt(2) * sps.t.ppf(0.975, 1)  # Hesterberg's widening for n = 2: sqrt(n / (n-1)) t_{n-1}
    ref = sps.bootstrap((x,), np.mean, n_resamples=10_000, confidence_level=1 - 2 * sps.norm.sf(z),
                        method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert ft.ci["train_seconds"] == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_rows_sorted_best_first_and_by_any_column(board):
    assert [r.label for r in board.tables[0].rows] == ["joint", "align-only", "full-ft"]  # by ACC, descending
    (t,) = board.tables
    assert [r.label for r in leaderboard.sort_rows(t.rows, t.columns, "forgetting")] == [
        "align-only", "joint", "full-ft"]  # lower is better: 0, .05, .35
    assert [r.label for r in leaderboard.sort_rows(t.rows, t.columns, "trainable")][0] == "align-only"
    with pytest.raises(ValueError, match="cannot sort by 'speed'; choose one of: group, acc, bwt"):
        leaderboard.sort_rows(t.rows, t.columns, "speed")


def test_bad_files_are_named_and_left_out(board):
    why = {p.name: reason for p, reason in board.skipped}
    assert set(why) == {"truncated.json", "future.json", "failed.json", "incomplete.json"}
    assert "unreadable" in why["truncated.json"]
    assert "newer than this clbench reads" in why["future.json"]
    assert "not a finished run" in why["failed.json"]
    assert "accuracy_matrix" in why["incomplete.json"]
    assert sum(len(r.runs) for r in board.tables[0].rows) == 5  # the good files all made it


def test_markdown_matches_the_golden_table(board):
    text = formats.to_markdown(board)
    golden = FIXTURES / "leaderboard.md"
    if os.environ.get("CLBENCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_csv_latex_and_html(board):
    import csv

    lines = list(csv.DictReader(formats.to_csv(board).splitlines()))
    (t,) = board.tables
    assert tuple(lines[0]) == formats.CSV_HEADER and len(lines) == len(t.rows) * len(t.columns)  # long format
    assert all(x["examples_per_stage"] == "12800" and x["main_budget"] == "yes" for x in lines)  # 400 steps x 32
    joint_acc = next(x for x in lines if x["label"] == "joint" and x["column"] == "acc")
    assert (joint_acc["stream"], joint_acc["order"], joint_acc["header"]) == ("vision-audio", "vision > audio", "ACC")
    assert (joint_acc["value"], joint_acc["low"], joint_acc["high"]) == ("0.883333", "0.883333", "0.883333")
    assert "expanded percentile bootstrap" in joint_acc["method"]
    seeds = next(x for x in lines if x["label"] == "joint" and x["column"] == "seeds")
    assert (seeds["value"], seeds["low"], seeds["high"]) == ("2", "", "")  # a count has no interval
    latex = formats.to_latex(board)
    assert r"\begin{tabular}" in latex and "0.567 [0.467, 0.667]" in latex and "Text ret. \\%" in latex
    assert "% Intervals: mean [95% interval] over seeds, an expanded percentile bootstrap" in latex
    assert latex.splitlines()[1].startswith("% Group (letters in order of mean ACC")  # a comment line
    page = formats.to_html(board, {"vision-audio": ["pareto.png"]})
    assert "<table>" in page and "src='figures/vision-audio/pareto.png'" in page
    assert "data:" not in page  # figures linked, not inlined


def _two_streams(tmp_path: Path) -> Path:
    """The fixture runs, and a copy of them as stream "audio-first" (before the default stream by name) whose
    second task is named "image": its table has other columns (retention of image, not vision)."""
    import json
    import shutil

    shutil.copytree(FIXTURES / "results" / "runs" / "vision-audio", tmp_path / "runs" / "vision-audio",
                    ignore=shutil.ignore_patterns("broken"))
    for path in (tmp_path / "runs" / "vision-audio").rglob("*.json"):
        doc = json.loads(path.read_text())
        doc["stream"]["name"] = "audio-first"
        doc["stream"]["tasks"][1]["name"] = "image"
        doc["run_key"] = "af-" + doc["run_key"]
        target = tmp_path / "runs" / "audio-first" / path.relative_to(tmp_path / "runs" / "vision-audio")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))
    return tmp_path


def test_the_csv_puts_every_value_under_its_own_column_across_tables_of_different_columns(tmp_path):
    import csv

    board = leaderboard.build(_two_streams(tmp_path))
    assert [t.stream for t in board.tables] == ["vision-audio", "audio-first"]  # the default stream first
    assert {c.key for c in board.tables[0].columns} != {c.key for c in board.tables[1].columns}
    lines = list(csv.DictReader(formats.to_csv(board).splitlines()))
    assert len(lines) == sum(len(t.rows) * len(t.columns) for t in board.tables)
    tables = {t.stream: t for t in board.tables}
    for line in lines:  # each value is the board's own, under its own column
        t = tables[line["stream"]]
        r = next(r for r in t.rows if r.label == line["label"])
        c = next(c for c in t.columns if c.key == line["column"])
        assert line["header"] == c.header and line["strategy"] == r.strategy
        if c.kind == "text":
            assert line["value"] == r.text.get(c.key, "")
        else:
            assert line["value"] == formats._raw(r.values.get(c.key, (math.nan,))[0])
    assert any(x["column"] == "retention:image" for x in lines if x["stream"] == "audio-first")
    assert not any(x["column"] == "retention:image" for x in lines if x["stream"] == "vision-audio")


def test_the_html_page_links_its_figures_has_contents_and_stays_small(tmp_path):
    results = _two_streams(tmp_path / "results")
    page = tmp_path / "site" / "board.html"
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results), "--format", "html", "-o", str(page),
                                    "--device", "cpu"])
    assert out.exit_code == 0, out.output
    text = page.read_text()
    assert len(text.encode()) < 1_000_000 and "data:" not in text
    sources = re.findall(r"<img alt='[^']+'[^>]* src='([^']+)'", text)
    assert len(sources) > 10 and all((page.parent / s).is_file() for s in sources)  # drawn beside the page
    contents = re.search(r"<nav><h2>Contents</h2>(.*?)</nav>", text, re.S).group(1)
    anchors = re.findall(r"href='#([^']+)'", contents)
    assert anchors[:2] == ["vision-audio", "audio-first"]  # the default stream first
    assert all(f"id='{a}'" in text for a in anchors)
    assert text.index("id='vision-audio'") < text.index("id='audio-first'")
    printed = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results), "--format", "html",
                                        "--device", "cpu"])
    assert printed.exit_code == 0 and "<img alt='pareto.png'" not in printed.stdout
    assert "links no figures: with -o PAGE they are drawn into figures/ beside it" in printed.stderr


def test_rows_of_one_strategy_with_different_options_get_telling_labels(tmp_path):
    import json
    import shutil

    shutil.copytree(FIXTURES / "results" / "runs" / "vision-audio" / "full-ft", tmp_path / "runs" / "s" / "full-ft")
    path = next((tmp_path / "runs" / "s" / "full-ft").glob("*seed1*"))
    doc = json.loads(path.read_text())
    doc["config"]["strategy_options"] = {"lr": 0.001}
    path.write_text(json.dumps(doc))
    labels = sorted(r.label for r in leaderboard.build(tmp_path).tables[0].rows)
    assert labels == ["full-ft (lr=0.001)", "full-ft (lr=default)"]


def test_orders_get_their_own_tables_and_the_order_effect_is_tested(tmp_path):
    """Runs of a stream in another order form their own table; the order effect pairs ACC by seed."""
    import json
    import shutil

    src = FIXTURES / "results" / "runs" / "vision-audio" / "full-ft"
    shutil.copytree(src, tmp_path / "runs" / "vision-audio" / "full-ft")
    accs = {}
    for path in sorted(src.glob("*.json")):
        doc = json.loads(path.read_text())
        R = np.array(doc["accuracy_matrix"])
        accs.setdefault("default", {})[doc["seed"]] = R[-1].mean()
        # the same stream, audio learnt before vision: columns (and the stages) in that order
        perm = [0, 2, 1]
        R2 = np.clip(R[:, perm] + 0.05 * (doc["seed"] + 1), 0, 1)
        doc["accuracy_matrix"] = R2.tolist()
        doc["stream"]["tasks"] = [doc["stream"]["tasks"][i] for i in perm]
        doc["stream"]["order"], doc["stream"]["default_order"] = ["audio", "vision"], ["vision", "audio"]
        assert doc["schema_version"] == 1  # no per-item results or routing to permute
        accs.setdefault("reversed", {})[doc["seed"]] = R2[-1].mean()
        (tmp_path / "runs" / "vision-audio" / "full-ft" / path.name.replace(".json", "-rev.json")).write_text(
            json.dumps(doc))
    board = leaderboard.build(tmp_path)
    assert [(t.title, t.default_order) for t in board.tables] == [
        ("vision-audio", True), ("vision-audio, order audio > vision", False)]
    assert [t.slug for t in board.tables] == ["vision-audio", "vision-audio--audio-vision"]
    (effect,) = tables.order_effects(board)
    assert effect.label == "full-ft" and effect.orders == [("vision", "audio"), ("audio", "vision")]
    assert effect.seeds == [Unit(0, 0), Unit(0, 1)] and effect.test == "paired t"
    a, b = [accs["default"][s] for s in (0, 1)], [accs["reversed"][s] for s in (0, 1)]
    assert effect.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert effect.acc == [pytest.approx(np.mean(a)), pytest.approx(np.mean(b))]
    text = formats.to_markdown(board)
    assert "## vision-audio, order audio > vision" in text and "## Order effects" in text
    assert f"| vision-audio | full-ft | vision > audio: {np.mean(a):.3f}; audio > vision: {np.mean(b):.3f} |" in text
    page = formats.to_html(board)
    assert "<h2 id='order-effects'>Order effects</h2>" in page and "<td>full-ft</td>" in page and "<td>paired t</td>" in page


def test_cli_leaderboard_formats_stream_and_errors(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "| joint |" in out.stdout and "left out results/runs/vision-audio/broken/future.json" in out.stderr
    out = runner.invoke(main, ["leaderboard", "--format", "csv", "--sort", "forgetting", "--device", "cpu"])
    assert out.exit_code == 0 and out.stdout.splitlines()[1].startswith("vision-audio,vision > audio,12800,yes,align-only")
    out = runner.invoke(main, ["leaderboard", "--stream", "nope", "--device", "cpu"])
    assert out.exit_code != 0 and "no finished runs of stream 'nope'" in out.output and "vision-audio" in out.output
    out = runner.invoke(main, ["leaderboard", "--results-dir", "missing", "--device", "cpu"])
    assert out.exit_code != 0 and "no finished result files under missing/runs" in out.output


def test_plot_writes_every_figure(monkeypatch, tmp_path):
    monkeypatch.chdir(FIXTURES)
    out = CliRunner().invoke(main, ["plot", "--out-dir", str(tmp_path), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    names = sorted(p.name for p in (tmp_path / "vision-audio").iterdir())
    assert names == sorted(["forgetting-curves.png", "pareto.png"] + [
        f"{s}-{k}.png" for s in ("align-only", "full-ft", "joint") for k in ("accuracy", "transfer")])
    assert all((tmp_path / "vision-audio" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_pareto_front():
    from cl_bench.analysis.grouping import pareto_front

    pts = [(10, 0.5), (5, 0.4), (20, 0.45), (30, 0.9), (5, 0.3)]
    assert pareto_front(pts) == [(5, 0.4), (10, 0.5), (30, 0.9)]


def test_log_axis_labels_are_compact():
    from cl_bench.reporting.figures import _compact

    assert [_compact(v) for v in (50, 200, 2e3, 1.9e6, 3e9)] == ["50", "200", "2k", "1.9M", "3G"]


def test_intransigence_reference_is_the_better_of_joint_and_single_task(tmp_path):
    import json
    import shutil

    shutil.copytree(FIXTURES / "results", tmp_path / "results")
    src = tmp_path / "results/runs/vision-audio/full-ft/mixtral-tiny-seed0-full0.json"
    doc = json.loads(src.read_text())
    doc["config"]["strategy"] = "single-ft"
    doc["accuracy_matrix"] = [[0.9, 0.1, 0.1], [0.5, 0.95, 0.1], [0.3, 0.2, 0.9]]  # vision alone: .95 > joint's .9
    (tmp_path / "results/runs/vision-audio/single-ft").mkdir()
    (tmp_path / "results/runs/vision-audio/single-ft/x.json").write_text(json.dumps(doc))
    board = leaderboard.build(tmp_path / "results")
    # a* = (max(.9, .95), max(.95, .9)) = (.95, .95); full-ft seed 0: ((.95-.6) + (.95-.7)) / 2 = .30,
    # seed 1: ((.95-.8) + (.95-.9)) / 2 = .10
    assert row(board, "full-ft").per_seed["intransigence"] == {Unit(0, 0): pytest.approx(0.30),
                                                                 Unit(0, 1): pytest.approx(0.10)}
    assert row(board, "joint").values["intransigence"][0] == pytest.approx(0.025)  # ((.95-.9) + (.95-.95)) / 2


def test_the_page_section_is_regenerated_between_its_markers(tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    readme = tmp_path / "leaderboard.md"
    readme.write_text(f"# intro\n\n{README_BEGIN}\nstale table\n{README_END}\n\nafter\n")
    for flag in ("--page", "--readme"):  # idempotent; --readme is the option's former name
        out = CliRunner().invoke(main, ["leaderboard", "--results-dir", "results", flag, str(readme)])
        assert out.exit_code == 0, out.output
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith(f"{README_END}\n\nafter\n")
    assert "stale table" not in text and text.count("| joint | a | 0.883 [0.883, 0.883] |") == 1
    assert "| Strategy | Group | ACC | BWT | Forgetting | Intransigence | Text ret. % | Budget x |" in text
    readme.write_text("no markers\n")
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", "results", "--page", str(readme)])
    assert out.exit_code == 2 and "no section markers" in out.output
    assert "docs/leaderboard.md" in out.output  # where clbench's own leaderboard section is, for old commands


def _break(doc, how):
    """One kind of malformed result file, made from a good one."""
    import copy

    d = copy.deepcopy(doc)
    if how == "no-strategy":
        del d["config"]["strategy"]
    elif how == "seed-text":
        d["seed"] = "zero"
    elif how == "no-chance":
        del d["stream"]["tasks"][1]["chance"]
    elif how == "no-cost":
        del d["stages"][0]["cost"]
    elif how == "no-train-seconds":
        del d["timing"]["train_seconds"]
    elif how == "no-acc":
        del d["metrics"]["acc"]
    elif how == "acc-text":
        d["metrics"]["acc"] = "high"
    elif how == "stream-list":
        d["stream"] = ["vision-audio"]
    elif how == "stages-none":
        d["stages"] = None
    elif how == "matrix-strings":
        d["accuracy_matrix"] = [["a"] * 3] * 3
    elif how == "declaration-unknown":
        d["declaration"] = {"keeps_everything": True}
    elif how == "renamed-tasks":  # a well-formed run whose tasks are named otherwise: it alone is left out
        for t, name in zip(d["stream"]["tasks"], ("text", "pictures", "sounds")):
            t["name"] = name
    return d


BROKEN_KINDS = ("no-strategy", "seed-text", "no-chance", "no-cost", "no-train-seconds", "no-acc", "acc-text",
                "stream-list", "stages-none", "matrix-strings", "declaration-unknown", "renamed-tasks")


def test_malformed_files_are_left_out_one_line_each_and_never_displace_good_runs(tmp_path):
    import json
    import shutil

    src = FIXTURES / "results" / "runs" / "vision-audio"
    dst = tmp_path / "runs" / "vision-audio"
    for strategy in ("full-ft", "align-only", "joint"):
        shutil.copytree(src / strategy, dst / strategy)
    good = json.loads(next((src / "full-ft").glob("*seed0*")).read_text())
    bad_dir = dst / "full-ft"
    for i, how in enumerate(BROKEN_KINDS):
        # "00-" sorts first: a bad file read before every good one must not decide the stream's tasks
        (bad_dir / f"00-{how}.json").write_text(json.dumps(_break(good, how)))
    (bad_dir / "00-a-list.json").write_text("[1, 2]")
    (bad_dir / "00-empty.json").write_text("")
    board = leaderboard.build(tmp_path)
    why = {p.name: reason for p, reason in board.skipped}
    assert set(why) == {f"00-{h}.json" for h in BROKEN_KINDS} | {"00-a-list.json", "00-empty.json"}, why
    assert why["00-no-strategy.json"] == "config.strategy: missing"
    assert why["00-renamed-tasks.json"] == (
        "its tasks (text, pictures, sounds) differ from the other runs of stream 'vision-audio'")
    (t,) = board.tables
    assert [x["name"] for x in t.tasks] == ["text", "vision", "audio"]
    assert sorted(r.label for r in t.rows) == ["align-only", "full-ft", "joint"]
    assert next(r for r in t.rows if r.label == "full-ft").values["seeds"][0] == 2
    for args in (["leaderboard", "--device", "cpu"], ["plot", "--out-dir", str(tmp_path / "fig"), "--device", "cpu"]):
        out = CliRunner().invoke(main, [*args, "--results-dir", str(tmp_path)])
        assert out.exit_code == 0, out.output
        assert "Traceback" not in out.output
        for name in why:  # each left out with one line that names the file
            assert sum(name in line for line in out.stderr.splitlines()) == 1, (name, out.stderr)


def test_a_bar_in_an_option_value_stays_inside_its_markdown_cell(tmp_path):
    import json
    import shutil

    shutil.copytree(FIXTURES / "results" / "runs" / "vision-audio" / "full-ft", tmp_path / "runs" / "s" / "full-ft")
    path = next((tmp_path / "runs" / "s" / "full-ft").glob("*seed1*"))
    doc = json.loads(path.read_text())
    doc["config"]["strategy_options"] = {"note": "a|b"}
    path.write_text(json.dumps(doc))
    md = formats.to_markdown(leaderboard.build(tmp_path))
    header = next(l for l in md.splitlines() if l.startswith("| Strategy |"))
    line = next(l for l in md.splitlines() if l.startswith("| full-ft (note=a"))
    assert "note=a\\|b" in line
    assert len(re.findall(r"(?<!\\)\|", line)) == header.count("|")  # as many cell borders as the header
