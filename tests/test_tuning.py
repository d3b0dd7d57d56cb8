"""Hyperparameter selection on validation data only (cl_bench.tuning, `clbench tune`)."""

import json

import pytest
from click.testing import CliRunner

from cl_bench import tuning
from cl_bench.cli import main


def test_grid_points_are_every_combination_in_order():
    assert tuning.grid_points({"lr": ("1", "2"), "r": ("4", "16")}) == [
        {"lr": "1", "r": "4"}, {"lr": "1", "r": "16"}, {"lr": "2", "r": "4"}, {"lr": "2", "r": "16"}]
    assert tuning.grid_points({}) == [{}]


def test_choose_takes_the_best_mean_and_the_earlier_of_ties():
    assert tuning.choose([[0.5, 0.7], [0.7, 0.6], [0.6, 0.6]]) == 1
    assert tuning.choose([[0.6, 0.6], [0.5, 0.7]]) == 0  # equal means: the earlier point


def test_tune_strategy_scores_final_validation_acc_and_refuses_test_runs():
    def fake(point, seed, split="val"):
        acc = {"0.0003": 0.6, "0.001": 0.7, "0.0001": 0.5}[point["lr"]] + 0.01 * seed
        return {"config": {"eval_split": split}, "accuracy_matrix": [[0.9, 0.0, 0.0], [0.8, acc, 0.1], [0.7, acc, acc]]}

    report = tuning.tune_strategy("full-ft", lambda p, s: fake({"lr": str(float(p["lr"]))}, s), seeds=(0, 1))
    assert [p["options"]["lr"] for p in report["points"]] == ["1e-4", "3e-4", "1e-3"]
    assert report["points"][2]["val_acc"] == [pytest.approx((0.7 + 1.4) / 3), pytest.approx((0.7 + 1.42) / 3)]
    assert report["chosen"] == {"lr": "1e-3"} and report["defaults_now"] == {"lr": "0.0003"}
    assert report["defaults_match"] is False
    with pytest.raises(ValueError, match="not evaluated on validation data"):
        tuning.tune_strategy("full-ft", lambda p, s: fake({"lr": str(float(p["lr"]))}, s, "test"))


def test_cli_tune_runs_the_grid_on_validation_splits(tmp_path, cache_dir, stream):
    out = tmp_path / "hp" / "va"
    r = CliRunner().invoke(main, ["tune", "--strategies", "align-only", "--seeds", "0", "--steps", "2",
                                  "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--device", "cpu",
                                  "--results-dir", str(tmp_path / "tuning"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.with_suffix(".json").read_text())
    got = report["strategies"]["align-only"]
    assert [p["options"] for p in got["points"]] == [{"projector_lr": v} for v in ("1e-3", "2e-3", "5e-3")]
    assert got["chosen"] in [p["options"] for p in got["points"]] and report["seeds"] == [0]
    assert "| align-only | projector_lr=" in out.with_suffix(".md").read_text()
    docs = [json.loads(f.read_text()) for f in (tmp_path / "tuning").rglob("*.json")]
    assert len(docs) == 3
    for doc in docs:  # every evaluation scored the validation splits, whole
        assert doc["config"]["eval_split"] == "val"
        assert [t["n_test"] for t in doc["stream"]["tasks"]] == [t["n_val"] for t in doc["stream"]["tasks"]]
        assert doc["extra_accuracy"] == {}


def test_eval_split_is_checked():
    from cl_bench.runner import RunConfig

    with pytest.raises(ValueError, match="eval_split must be 'test' or 'val'"):
        RunConfig(eval_split="train")
