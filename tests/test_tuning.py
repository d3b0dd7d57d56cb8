"""Hyperparameter selection on validation data only (cl_bench.engines.tune, `clbench tune`)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench import registry
from cl_bench.api.strategy import Strategy
from cl_bench.cli import main
from cl_bench.engines import tune as tuning
from cl_bench.errors import UsageError
from cl_bench.results import TUNING_PAGE


def test_choose_takes_the_best_mean_and_the_earlier_of_ties():
    assert tuning.choose([[0.5, 0.7], [0.7, 0.6], [0.6, 0.6]]) == 1
    assert tuning.choose([[0.6, 0.6], [0.5, 0.7]]) == 0  # equal means: the earlier point


@dataclass(frozen=True)
class ToyConfig:
    lr: float = 1e-3
    width: int = 4
    mode: str = "a"


class Toy(Strategy):
    """A strategy with three options to tune (never run: tune_strategy gets a fake run_one)."""

    Config = ToyConfig
    tuning = {"lr": ("1e-4", "3e-4", "1e-3"), "width": ("4", "16"), "mode": ("a", "b")}  # noqa: RUF012

    def learn(self, experience):  # pragma: no cover - tuning is faked
        raise NotImplementedError


@pytest.fixture
def toy():
    registry.strategies.register("toy", "test_tuning:Toy", origin="tests")
    yield registry.strategies.get("toy")
    registry.strategies.unregister("toy")


def _doc(acc, split="val"):
    return {"config": {"eval_split": split}, "accuracy_matrix": [[0.9, 0.0, 0.0], [0.8, acc, 0.1], [0.7, acc, acc]]}


def test_widened_steps_one_value_past_an_edge():
    assert tuning.widened(("1e-4", "3e-4", "1e-3"), "1e-3") == "3.3e-3"
    assert tuning.widened(("1e-4", "3e-4", "1e-3"), "1e-4") == "3.3e-5"
    assert tuning.widened(("1e-4", "3e-4", "1e-3"), "3e-4") is None  # inside: nothing to widen
    assert tuning.widened(("4", "16"), "16") == "64" and tuning.widened(("4", "16"), "4") == "1"
    assert tuning.widened(("a", "b"), "b") is None and tuning.widened(("2",), "2") is None


def test_noisy_compares_the_gap_with_the_seed_spread():
    assert tuning.noisy([0.5, 0.7], [0.6, 0.62])  # gap 0.01, spread 0.14
    assert not tuning.noisy([0.80, 0.81], [0.50, 0.52])
    assert not tuning.noisy([0.5], [0.6])


def test_a_value_the_strategy_refuses_past_an_edge_stops_the_widening(toy):
    def fake(point, seed):
        if int(point.get("width", 4)) > 16:
            raise ValueError(f"width {point['width']} does not divide the hidden size")
        return _doc(0.5 + 0.01 * int(point.get("width", 4)))

    report = tuning.tune_strategy("toy", fake, seeds=(0, 1))
    assert report["tried"]["width"] == ["4", "16"] and report["chosen"]["width"] == "16"
    assert report["refused"] == {"width": [{"value": "64", "error": "width 64 does not divide the hidden size"}]}
    assert "width" in report["on_edge"]
    with pytest.raises(ValueError, match="does not divide"):  # a declared value refused is the grid's mistake
        tuning.tune_strategy("toy", fake, seeds=(0,), grid={"width": ("16", "32")})


def test_score_final_is_the_last_row_and_own_the_new_tasks_diagonal():
    doc = {"accuracy_matrix": [[0.9, 0.1, 0.1], [0.5, 0.8, 0.1], [0.4, 0.3, 0.6]]}
    assert tuning.score(doc) == pytest.approx((0.4 + 0.3 + 0.6) / 3)
    assert tuning.score(doc, "own") == pytest.approx((0.8 + 0.6) / 2)


def test_tuning_goes_one_option_at_a_time_widens_edges_and_adds_a_seed_where_noisy(toy):
    calls = []

    def fake(point, seed):
        calls.append((tuple(sorted(point.items())), seed))
        lr, width, mode = float(point.get("lr", 1e-3)), int(point.get("width", 4)), point.get("mode", "a")
        peak = {1e-4: 0.5, 3e-4: 0.6, 1e-3: 0.7, 3.3e-3: 0.72, 1.1e-2: 0.65}[round(lr, 6)]
        acc = peak + (0.01 if width == 16 else 0.0) + (0.0 if width < 64 else -0.2)
        acc += {"a": 0.0, "b": 0.005}[mode] + (0.01 if seed == 1 else 0.0) - (0.02 if mode == "b" and seed == 1 else 0)
        return _doc(acc)

    report = tuning.tune_strategy("toy", fake, seeds=(0, 1))
    assert report["procedure"] == "coordinate" and report["score"] == "final"
    # lr: 1e-3 sat on the edge, so 3.3e-3 was tried, then 1.1e-2 (worse): 3.3e-3 is inside and chosen
    assert report["tried"]["lr"] == ["1e-4", "3e-4", "1e-3", "3.3e-3", "1.1e-2"]
    # width 16 won on the edge, 64 was tried and lost
    assert report["tried"]["width"] == ["4", "16", "64"]
    assert report["chosen"] == {"lr": "3.3e-3", "width": "16", "mode": "a"}
    # mode a / b: b is ahead by 0.005 on seed 0 and behind by 0.015 on seed 1: within the spread, so seed 2 decides
    mode_round = [r for r in report["rounds"] if r["option"] == "mode"][-1]
    assert [p["seeds"] for p in mode_round["points"]] == [[0, 1, 2], [0, 1, 2]]
    assert report["on_edge"] == [] and report["defaults_match"] is False
    # each resolved point and seed ran once: {lr: 1e-3} with width and mode at defaults is the defaults' run
    assert len(calls) == len(set(calls))
    assert sum(1 for p in report["points"] if p["options"] == {"lr": "1e-3", "width": "4", "mode": "a"}) == 1


def test_a_grid_still_on_its_edge_after_widening_is_reported(toy):
    report = tuning.tune_strategy("toy", lambda p, s: _doc(min(0.99, float(p["lr"]) * 10)), seeds=(0, 1))
    assert len(report["tried"]["lr"]) == 3 + tuning.WIDENINGS and report["on_edge"] == ["lr"]
    with pytest.raises(ValueError, match="not evaluated on validation data"):
        tuning.tune_strategy("toy", lambda p, s: _doc(0.5, "test"))


def test_single_ft_is_tuned_on_its_own_tasks_and_joint_on_the_final_row():
    from cl_bench.strategies.joint import Joint, SingleTask

    assert SingleTask.tuning_score == "own" and Joint.tuning_score == "final"


@pytest.mark.slow
def test_cli_tune_runs_the_grid_on_validation_splits(tmp_path, cache_dir, small):
    out = tmp_path / "hp" / "va"
    r = CliRunner().invoke(main, ["tune", "--stream", "small-numbers", "--strategies", "align-only", "--seeds", "0", "--steps", "2",
                                  "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--device", "cpu",
                                  "--results-dir", str(tmp_path / "tuning"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.with_suffix(".json").read_text())
    got = report["strategies"]["align-only"]
    grid = registry.strategies.get("align-only").tuning["projector_lr"]
    tried = got["tried"]["projector_lr"]  # the grid, then any value past an edge (widened)
    assert tried[:len(grid)] == list(grid) and len(tried) <= len(grid) + tuning.WIDENINGS
    assert [p["options"] for p in got["points"]] == [{"projector_lr": v} for v in tried]
    assert got["chosen"] in [p["options"] for p in got["points"]] and report["seeds"] == [0]
    assert "| align-only | projector_lr=" in out.with_suffix(".md").read_text()
    docs = [json.loads(f.read_text()) for f in (tmp_path / "tuning").rglob("*.json")]
    assert len(docs) == len(tried)
    for doc in docs:  # every evaluation scored the validation splits, whole
        assert doc["config"]["eval_split"] == "val"
        assert [t["n_test"] for t in doc["stream"]["tasks"]] == [t["n_val"] for t in doc["stream"]["tasks"]]
        assert doc["extra_accuracy"] == {}
    assert report["provenance"]["torch_threads"] == [docs[0]["environment"]["torch_threads"]]
    key, sha = docs[0]["base_model"]["key"], docs[0]["base_model"]["weights_sha256"][:16]
    assert report["provenance"]["base_models"] == {key: {"runs": len(tried), "weights": {sha: len(tried)}}}
    assert tuning.recompute(report, tmp_path / "tuning") == []  # every score from its run file
    summary = tuning.summary_markdown(report)
    assert f"| align-only | projector-lr ∈ {{{', '.join(tried)}}} | {tuning.point_label(got['chosen'])}" in summary
    page = tmp_path / "strategies.md"
    page.write_text(f"# x\n{tuning.README_BEGIN}\nold\n{tuning.README_END}\nafter\n")
    r = CliRunner().invoke(main, ["tune", "--stream", "small-numbers", "--strategies", "align-only", "--seeds", "0", "--steps", "2",
                                  "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--device", "cpu",
                                  "--results-dir", str(tmp_path / "tuning"), "--out", str(out), "--page", str(page)])
    assert r.exit_code == 0, r.output  # every run reused
    assert page.read_text() == f"# x\n{tuning.README_BEGIN}\n{summary}{tuning.README_END}\nafter\n"
    report["strategies"]["align-only"]["points"][1]["val_acc"][0] += 0.01
    (problem,) = tuning.recompute(report, tmp_path / "tuning")
    assert problem.startswith(f"align-only projector_lr={tried[1]} seed 0: the report says")
    for p in report["strategies"]["align-only"]["points"]:
        p["seeds"] = [3]
    assert len(tuning.recompute(report, tmp_path / "tuning")) == len(tried)  # no run of seed 3: each point says so


REPORT = Path(__file__).resolve().parents[1] / "results" / "hparams" / "vision-audio.json"


def test_the_defaults_are_the_committed_tuning_choice():
    """Every strategy with a grid has been tuned with that grid, and its defaults are the choice."""
    from cl_bench import registry

    report = json.loads(REPORT.read_text())
    tuned = report["strategies"]
    for name in registry.strategies.names():
        cls = registry.strategies.get(name)
        grid = getattr(cls, "tuning", None)
        if not grid or cls.__module__.split(".")[0] != "strategies":
            continue
        assert name in tuned, f"{name} declares a grid but {REPORT.name} has no choice for it: run clbench tune"
        assert tuned[name]["grid"] == {k: list(v) for k, v in grid.items()}, f"{name}'s grid changed: rerun clbench tune"
        for option, value in tuned[name]["chosen"].items():
            assert tuning._same(tuning._default(cls, option), value), (name, option, value)


def test_the_committed_tuning_report_recomputes_from_its_run_files():
    report = json.loads(REPORT.read_text())
    assert tuning.recompute(report, REPORT.parents[1] / "tuning") == []
    assert REPORT.with_suffix(".md").read_text() == tuning.to_markdown(report)
    page = (REPORT.parents[2] / TUNING_PAGE).read_text()  # the docs page that holds the table
    assert f"{tuning.README_BEGIN}\n{tuning.summary_markdown(report)}{tuning.README_END}" in page


def test_eval_split_is_checked():
    from cl_bench.run.runner import RunConfig

    with pytest.raises(ValueError, match="eval_split must be 'test' or 'val'"):
        RunConfig(eval_split="train")


def test_a_grids_file_replaces_the_declared_grids_and_scores(tmp_path, toy):
    f = tmp_path / "grids.yaml"
    f.write_text("toy:\n  score: own\n  mode: [b, a]\n  lr: [1e-3, 3e-3]\n")
    grids = tuning.load_grids(f)
    assert grids == {"toy": {"grid": {"mode": ("b", "a"), "lr": ("1e-3", "3e-3")}, "score": "own"}}
    seen = []
    report = tuning.tune_strategy("toy", lambda p, s: seen.append(dict(p)) or _doc(0.5), seeds=(0,),
                                  grid=grids["toy"]["grid"], rule=grids["toy"]["score"])
    assert report["score"] == "own" and list(report["tried"]) == ["mode", "lr"] and seen[0]["mode"] == "b"
    for bad, message in (("toy: [1, 2]\n", "give its options' values"), ("toy:\n  score: best\n  lr: [1]\n",
                                                                          "score must be one of final, own")):
        f.write_text(bad)
        with pytest.raises(UsageError, match=message):
            tuning.load_grids(f)


def test_the_retuning_grids_name_real_options_of_every_strategy():
    """results/hparams/grids-vision-audio.yaml (the issue-29 retuning) names each strategy's own options."""
    grids = tuning.load_grids(REPORT.parent / "grids-vision-audio.yaml")
    for name, spec in grids.items():
        cls = registry.strategies.get(name)
        for option, values in spec["grid"].items():
            for v in values:  # each value is one the strategy's Config takes
                from cl_bench.config import from_options

                from_options(cls.Config, {option: v}, f"strategy {name!r}")


def test_the_default_competes_where_the_grid_lacks_it_so_a_round_never_ends_below_its_start(toy):
    # lr's default 1e-3 is outside this grid and scores best: a grid value must beat it to replace it, and the
    # next option is then tuned at the default (the report shows which point was the round's start)
    def fake(point, seed):
        return _doc({1e-3: 0.8, 1e-4: 0.6, 3e-4: 0.7}[float(point.get("lr", 1e-3))] + 0.01 * seed)

    report = tuning.tune_strategy("toy", fake, seeds=(0, 1), grid={"lr": ("1e-4", "3e-4"), "mode": ("a", "b")})
    assert report["chosen"] == {"lr": "0.001", "mode": "a"} and report["defaults_match"]
    lr_round = report["rounds"][0]
    assert [p["value"] for p in lr_round["points"]] == ["0.001", "1e-4", "3e-4"]
    assert [p.get("start", False) for p in lr_round["points"]] == [True, False, False]
    # a default chosen past its grid's edge is not widened from, and is reported on the edge
    assert report["tried"]["lr"] == ["1e-4", "3e-4"] and report["on_edge"] == ["lr"]
    doc = {"stream": "s", "seeds": [0, 1], "command": "clbench tune", "clbench": "x", "strategies": {"toy": report}}
    assert "each option's default competing" in tuning.to_markdown(doc)
    assert "lr ∈ {0.001 (default), 1e-4, 3e-4}" in tuning.summary_markdown(doc)
    # a grid value that beats the default replaces it, and a grid holding the default adds no point
    better = tuning.tune_strategy("toy", lambda p, s: _doc(0.9 if p.get("lr") == "3e-4" else 0.5), seeds=(0,),
                                  grid={"lr": ("1e-4", "3e-4", "1e-3")})
    assert better["chosen"] == {"lr": "3e-4"} and len(better["rounds"][0]["points"]) == 3
