"""How each kind of error ends a command (cl_bench.errors): one line for what the user (exit 2) or the machine
(exit 1) can fix, and for a bug the traceback with a last line naming whose bug it is: a plug-in's or clbench's."""

import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench import registry
from cl_bench.cli import main, whose_bug
from cl_bench.errors import EnvironmentProblem, PluginError, RunFailed, UsageError

FIXTURES = str(Path(__file__).parent / "fixtures" / "results")


@pytest.fixture
def plugin_strategies(register_strategies):
    register_strategies({"missing-key": "helpers_strategies:MissingKey",
                         "not-a-strategy": "helpers_strategies:NotAStrategy"})


@pytest.mark.slow
def test_a_plugins_bug_shows_its_traceback_and_names_the_plugin(plugin_strategies, small, cache_dir, tmp_path):
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--strategy", "missing-key", "--steps", "1",
                                    "--batch-size", "4", "--pretrain-steps", "5", "--eval-limit", "8", "--device",
                                    "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path), "-q"])
    assert out.exit_code == 1, out.output
    assert "Traceback (most recent call last)" in out.output and "KeyError: 'missing'" in out.output
    assert "helpers_strategies.py" in out.output and 'return {}["missing"]' in out.output
    assert out.output.strip().splitlines()[-1] == ("this is a bug in plug-in strategy missing-key (tests); report it "
                                                   "to its authors")
    assert not list(tmp_path.rglob("*.json"))


def test_a_plugin_breaking_its_contract_is_its_bug(plugin_strategies):
    from cl_bench.api.strategy import strategy_class

    with pytest.raises(PluginError, match=r"^strategy not-a-strategy \(tests\): is <class .*NotAStrategy'>, not a "
                                          r"cl_bench.Strategy subclass$") as e:
        strategy_class("not-a-strategy")
    assert e.value.plugin == "strategy not-a-strategy (tests)"
    out = CliRunner().invoke(main, ["plan", "--strategy", "not-a-strategy", "--device", "cpu"])
    assert out.exit_code == 1 and "Traceback" in out.output and "PluginError" in out.output
    assert out.output.strip().splitlines()[-1] == ("this is a bug in plug-in strategy not-a-strategy (tests); "
                                                   "report it to its authors")


def test_whose_bug_is_the_innermost_frame_outside_the_libraries(tmp_path, monkeypatch):
    (tmp_path / "boom_plugin").mkdir()
    (tmp_path / "boom_plugin" / "__init__.py").write_text("class Boom:\n    pass\n")
    (tmp_path / "boom_plugin" / "helpers.py").write_text(textwrap.dedent("""
        import json

        def explode(text):
            return json.loads(text, object_hook=lambda d: d["missing"])  # raised inside a library's call
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.strategies.register("boom", "boom_plugin:Boom", origin="package boom-plugin")
    try:
        from boom_plugin.helpers import explode

        with pytest.raises(KeyError) as e:
            explode('{"a": 1}')
        # the innermost frames are json's; the one below them is the plug-in's (any module of its package)
        assert whose_bug(e.value) == ("this is a bug in plug-in strategy boom (package boom-plugin); report it to its "
                                      "authors")
    finally:
        registry.strategies.unregister("boom")
        sys.modules.pop("boom_plugin.helpers", None)
        sys.modules.pop("boom_plugin", None)

    from cl_bench.analysis import metrics
    import torch

    with pytest.raises(ValueError) as e:
        metrics.summarize(torch.zeros(2, 3))  # clbench's own code raised it
    assert whose_bug(e.value) == "this is a bug in clbench; please report it with the traceback above"
    assert whose_bug(PluginError("stream x (x-pkg 1.0)", "broken")) == (
        "this is a bug in plug-in stream x (x-pkg 1.0); report it to its authors")


def test_the_kinds_exit_codes():
    assert (UsageError.exit_code, EnvironmentProblem.exit_code, RunFailed.exit_code, PluginError.exit_code) == (2, 1,
                                                                                                                 1, 1)
    assert all(issubclass(k, ValueError) for k in (UsageError, EnvironmentProblem, RunFailed))
    from cl_bench.run.runner import RunDiverged

    assert issubclass(RunDiverged, RunFailed)
    assert issubclass(registry.UnknownName, UsageError) and issubclass(registry.UnknownName, LookupError)


def test_a_usage_error_is_one_line_with_exit_2():
    out = CliRunner().invoke(main, ["run", "--strategy", "ful-ft"])
    assert out.exit_code == 2, out.output
    assert out.output.strip().splitlines() == [
        "Error: unknown strategy 'ful-ft'. Did you mean 'full-ft', 'single-ft'? Known: " +
        ", ".join(registry.strategies.names()) + " (`clbench ls` lists them)."]


def test_an_environment_problem_is_one_line_with_exit_1(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", FIXTURES, "--device", "cuda"])
    assert out.exit_code == 1, out.output
    assert out.output.strip().splitlines() == [
        "Error: --device cuda was asked for, but torch sees no CUDA GPU; use --device auto or cpu"]


@pytest.mark.parametrize("how", ["--debug", "CLBENCH_DEBUG=1"])
def test_debug_shows_the_traceback_of_every_kind(how, monkeypatch):
    monkeypatch.delenv("CLBENCH_DEBUG", raising=False)
    if how == "--debug":
        args = ["--debug", "run", "--strategy", "ful-ft"]
    else:
        monkeypatch.setenv("CLBENCH_DEBUG", "1")
        args = ["run", "--strategy", "ful-ft"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2, out.output
    assert "Traceback (most recent call last)" in out.output and "cl_bench.registry.UnknownName" in out.output
    assert out.output.strip().splitlines()[-1].startswith("Error: unknown strategy 'ful-ft'.")


def test_a_bench_script_shows_clbench_errors_as_one_line(capsys):
    from cl_bench.errors import EnvironmentProblem, PluginError, UsageError, script_main

    def raises(e):
        def main():
            raise e
        return main

    for error, code in ((UsageError("no markers in page.md; put them there"), 2), (EnvironmentProblem("disk"), 1)):
        with pytest.raises(SystemExit) as exited:
            script_main(raises(error))
        assert exited.value.code == code and capsys.readouterr().err == f"error: {error}\n"
    with pytest.raises(PluginError):  # a plug-in's bug keeps its traceback
        script_main(raises(PluginError("strategy 'x'", "broke")))
    script_main(lambda: None)  # a main that returns: nothing said
    assert capsys.readouterr().err == ""
