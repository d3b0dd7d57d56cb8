"""The strategy contract, for every registered strategy (built-in or third-party)."""

import json

import pytest
from click.testing import CliRunner

from cl_bench import registry
from cl_bench.cli import main
from cl_bench.results import check_result
from cl_bench.run.validate import validate

# Built-ins that spend another budget than the stage's, each labelled in its declaration.
OVER_BUDGET = {"joint": "k x the stage budget at stage k"}


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.strategies.names())
def test_every_registered_strategy_keeps_the_contract(name, cache_dir, small, tmp_path):
    # 10 steps, so that MoExtend's three phases fit the stage budget (4 + 1 + 5); the small stream (vision-audio's
    # tasks, 32 training items each), so that EWC's Fisher over a whole training split takes seconds
    assert validate(name, stream="small-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path),
                    steps=10) == []
    (path,) = (tmp_path / "runs").rglob("*.json")
    result = json.loads(path.read_text())
    budget = result["declaration"]["budget"]
    if name in OVER_BUDGET:
        assert budget.startswith(OVER_BUDGET[name])
    elif registry.strategies.entry(name).origin == "package clbench":  # a built-in at default options
        assert budget == "equal"
        assert [s["training"]["examples"] for s in result["stages"]] == [40, 40]


@pytest.mark.slow
def test_the_budget_is_the_examples_every_phase_sees_together(cache_dir, small, tmp_path):
    """MoExtend's phases split the stage budget; full-ft's alignment phase comes out of it too."""
    for name, options, phases in (("moextend", {}, [4, 1, 5]), ("full-ft", {"align-fraction": "0.3"}, [3, 7])):
        validate(name, stream="small-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path / name), steps=10,
                 options=options)
        (path,) = (tmp_path / name / "runs").rglob("*.json")
        for stage in json.loads(path.read_text())["stages"]:
            assert [p["steps"] for p in stage["training"]["phases"]] == phases
            assert stage["training"]["examples"] == 40 and stage["training"]["budget_ratio"] == 1.0


@pytest.fixture
def problems_of(cache_dir, small, tmp_path):
    """validate() of a test strategy from helpers_strategies on the small stream, registered for that call only."""

    def check(name: str, cls: str) -> list[str]:
        registry.strategies.register(name, f"helpers_strategies:{cls}", origin="tests")
        try:
            return validate(name, stream="small-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path / name))
        finally:
            registry.strategies.unregister(name)

    return check


@pytest.mark.slow
def test_undeclared_memory_routing_or_budget_is_reported(problems_of):
    hoarder, router, spender = (problems_of(n, c) for n, c in (("hoarder", "Hoarder"), ("router", "SecretRouter"),
                                                               ("spender", "Spender")))
    assert any("does not declare past_train" in p for p in hoarder), hoarder
    assert any("does not declare modality_routed" in p for p in router), router
    assert any("the stage budget is 8" in p for p in spender), spender


@pytest.mark.slow
def test_a_broken_promise_is_reported(problems_of):
    problems = problems_of("liar", "Liar")
    frozen = next(p for p in problems if "parameters declared frozen changed" in p)
    assert "lm.model.embed_tokens.weight" in frozen  # named, not only counted
    assert any("cost does not add up" in p for p in problems)


@pytest.mark.slow
def test_a_strategy_that_understates_what_it_trains_is_reported(problems_of, cache_dir, tmp_path):
    (p,) = [p for p in problems_of("understater", "Understater") if "trainable parameters over its stages" in p]
    assert p.startswith("the strategy reports 0 trainable parameters") and "lm.model.embed_tokens.weight" in p
    clean = validate("full-ft", stream="small-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path / "ok"))
    assert clean == [], clean


def test_check_result_names_missing_parts():
    assert check_result({}) and "result file lacks 'accuracy_matrix'" in check_result({})


@pytest.mark.slow
def test_validate_command(cache_dir, small):
    out = CliRunner().invoke(main, ["validate", "--strategy", "align-only", "--stream", "small-numbers",
                                    "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    assert "the contract holds" in out.output


def test_check_result_catches_item_results_that_disagree_with_the_matrix():
    from pathlib import Path

    from cl_bench.results import pack_items

    path = Path(__file__).parent / "fixtures/results/runs/vision-audio/align-only/mixtral-tiny-seed0-alig0.json"
    doc = json.loads(path.read_text())
    assert check_result(doc) == []
    doc["item_results"]["rows"][2][1] = pack_items([True] * 9 + [False] * 11)  # 9/20, the matrix says 0.4
    assert check_result(doc) == ["per-item results of row 2, task 1 give 9/20, not the accuracy 0.4"]
    doc["item_results"]["rows"][2][1] = "not base64!"
    assert "unreadable" in check_result(doc)[0]


def test_check_result_catches_a_routing_analysis_that_is_not_a_distribution():
    from pathlib import Path

    path = Path(__file__).parent / "fixtures/results/runs/vision-audio/align-only/mixtral-tiny-seed0-alig0.json"
    doc = json.loads(path.read_text())
    doc["schema_version"] = 3
    shares = {t: [[0.25, 0.25, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]] for t in ("text", "vision", "audio")}
    row = {"layers": [0, 1], "expert_stage": [[-1] * 4, [-1] * 4], "shares": shares}
    doc["routing"] = {"rows": [row, None, json.loads(json.dumps(row))]}
    assert check_result(doc) == []
    doc["routing"]["rows"][2]["shares"]["audio"][1] = [0.5, 0.6, 0.0, 0.0]
    assert check_result(doc) == [("routing analysis of row 2, audio, layer 1: shares [0.5, 0.6, 0.0, 0.0] are not a "
                                 "distribution over its 4 experts")]
    doc["routing"]["rows"].pop()
    assert check_result(doc) == ["routing analysis missing or not one entry per evaluation"]
