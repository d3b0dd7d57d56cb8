"""The strategy contract, for every registered strategy (built-in or third-party)."""

import pytest
from click.testing import CliRunner

from cl_bench import registry
from cl_bench.cli import main
from cl_bench.validate import check_result, validate


@pytest.mark.parametrize("name", registry.strategies.names())
def test_every_registered_strategy_keeps_the_contract(name, cache_dir, stream, tmp_path):
    assert validate(name, cache_dir=str(cache_dir), results_dir=str(tmp_path)) == []


def test_a_broken_promise_is_reported(cache_dir, stream, tmp_path):
    registry.strategies.register("liar", "helpers_strategies:Liar", origin="tests")
    try:
        problems = validate("liar", cache_dir=str(cache_dir), results_dir=str(tmp_path))
    finally:
        registry.strategies.unregister("liar")
    assert any("parameters declared frozen changed" in p for p in problems)
    assert any("cost does not add up" in p for p in problems)


def test_check_result_names_missing_parts():
    assert check_result({}) and "result file lacks 'accuracy_matrix'" in check_result({})


def test_validate_command(cache_dir, stream):
    out = CliRunner().invoke(main, ["validate", "--strategy", "align-only", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    assert "the contract holds" in out.output
