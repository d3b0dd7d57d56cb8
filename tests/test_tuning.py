"""Hyperparameter selection on validation data only (cl_bench.engines.tune, `clbench tune`)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench import registry

from cl_bench.engines import tune as tuning
from cl_bench.cli import main
from cl_bench.strategies.full_ft import FullFineTuningConfig


def test_grid_points_are_every_combination_in_order():
    assert tuning.grid_points({"lr": ("1", "2"), "r": ("4", "16")}) == [
        {"lr": "1", "r": "4"}, {"lr": "1", "r": "16"}, {"lr": "2", "r": "4"}, {"lr": "2", "r": "16"}]
    assert tuning.grid_points({}) == [{}]


def test_choose_takes_the_best_mean_and_the_earlier_of_ties():
    assert tuning.choose([[0.5, 0.7], [0.7, 0.6], [0.6, 0.6]]) == 1
    assert tuning.choose([[0.6, 0.6], [0.5, 0.7]]) == 0  # equal means: the earlier point


def test_tune_strategy_scores_final_validation_acc_and_refuses_test_runs():
    def fake(point, seed, split="val"):
        acc = {"1e-05": 0.3, "3e-05": 0.4, "0.0001": 0.5, "0.0003": 0.6, "0.001": 0.7}[point["lr"]] + 0.01 * seed
        return {"config": {"eval_split": split}, "accuracy_matrix": [[0.9, 0.0, 0.0], [0.8, acc, 0.1], [0.7, acc, acc]]}

    report = tuning.tune_strategy("full-ft", lambda p, s: fake({"lr": str(float(p["lr"]))}, s), seeds=(0, 1))
    assert [p["options"]["lr"] for p in report["points"]] == ["1e-5", "3e-5", "1e-4", "3e-4", "1e-3"]
    assert report["points"][4]["val_acc"] == [pytest.approx((0.7 + 1.4) / 3), pytest.approx((0.7 + 1.42) / 3)]
    assert report["chosen"] == {"lr": "1e-3"} and report["defaults_now"] == {"lr": str(FullFineTuningConfig().lr)}
    assert report["defaults_match"] is False
    assert report["on_edge"] == ["lr"]  # 1e-3 is the grid's largest lr
    assert tuning.on_edge({"lr": ("1", "2", "3"), "mode": ("a", "b")}, {"lr": "2", "mode": "b"}) == []
    assert tuning.on_edge({"lr": ("1", "2", "3"), "r": ("4",)}, {"lr": "1", "r": "4"}) == ["lr"]
    with pytest.raises(ValueError, match="not evaluated on validation data"):
        tuning.tune_strategy("full-ft", lambda p, s: fake({"lr": str(float(p["lr"]))}, s, "test"))


@pytest.mark.slow
def test_cli_tune_runs_the_grid_on_validation_splits(tmp_path, cache_dir, stream):
    out = tmp_path / "hp" / "va"
    r = CliRunner().invoke(main, ["tune", "--strategies", "align-only", "--seeds", "0", "--steps", "2",
                                  "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--device", "cpu",
                                  "--results-dir", str(tmp_path / "tuning"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.with_suffix(".json").read_text())
    got = report["strategies"]["align-only"]
    grid = registry.strategies.get("align-only").tuning["projector_lr"]
    assert [p["options"] for p in got["points"]] == [{"projector_lr": v} for v in grid]
    assert got["chosen"] in [p["options"] for p in got["points"]] and report["seeds"] == [0]
    assert "| align-only | projector_lr=" in out.with_suffix(".md").read_text()
    docs = [json.loads(f.read_text()) for f in (tmp_path / "tuning").rglob("*.json")]
    assert len(docs) == len(grid)
    for doc in docs:  # every evaluation scored the validation splits, whole
        assert doc["config"]["eval_split"] == "val"
        assert [t["n_test"] for t in doc["stream"]["tasks"]] == [t["n_val"] for t in doc["stream"]["tasks"]]
        assert doc["extra_accuracy"] == {}
    assert report["provenance"]["torch_threads"] == [docs[0]["environment"]["torch_threads"]]
    key, sha = docs[0]["base_model"]["key"], docs[0]["base_model"]["weights_sha256"][:16]
    assert report["provenance"]["base_models"] == {key: {"runs": len(grid), "weights": {sha: len(grid)}}}
    assert tuning.recompute(report, tmp_path / "tuning") == []  # every score from its run file
    summary = tuning.summary_markdown(report)
    assert f"| align-only | projector-lr ∈ {{{', '.join(grid)}}} | {tuning.point_label(got['chosen'])}" in summary
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{tuning.README_BEGIN}\nold\n{tuning.README_END}\nafter\n")
    r = CliRunner().invoke(main, ["tune", "--strategies", "align-only", "--seeds", "0", "--steps", "2",
                                  "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--device", "cpu",
                                  "--results-dir", str(tmp_path / "tuning"), "--out", str(out), "--readme", str(readme)])
    assert r.exit_code == 0, r.output  # every run reused
    assert readme.read_text() == f"# x\n{tuning.README_BEGIN}\n{summary}{tuning.README_END}\nafter\n"
    report["strategies"]["align-only"]["points"][1]["val_acc"][0] += 0.01
    (problem,) = tuning.recompute(report, tmp_path / "tuning")
    assert problem.startswith("align-only projector_lr=2e-3 seed 0: the report says")
    report["seeds"] = [3]
    assert len(tuning.recompute(report, tmp_path / "tuning")) == len(grid)  # no run of seed 3: each point says so


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
    readme = (REPORT.parents[2] / "README.md").read_text()
    assert f"{tuning.README_BEGIN}\n{tuning.summary_markdown(report)}{tuning.README_END}" in readme


def test_eval_split_is_checked():
    from cl_bench.run.runner import RunConfig

    with pytest.raises(ValueError, match="eval_split must be 'test' or 'val'"):
        RunConfig(eval_split="train")
