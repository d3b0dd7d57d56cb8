"""The command line as a package: options built from the config dataclasses (a default written once), and what
`compare` and `plot` choose when not told."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench.cli import main
from cl_bench.config import Budget, PretrainConfig
from cl_bench.run.config import RunConfig

FIXTURES = Path(__file__).parent / "fixtures" / "results"


def _option(command: str, flag: str):
    return next(p for p in main.commands[command].params if flag in p.opts)


@pytest.mark.parametrize("command, flag, cls, field", [
    ("run", "--stream", RunConfig, "stream"), ("run", "--strategy", RunConfig, "strategy"),
    ("run", "--model", RunConfig, "model"), ("run", "--seed", RunConfig, "seed"),
    ("run", "--device", RunConfig, "device"),
    ("run", "--steps", Budget, "steps"), ("run", "--batch-size", Budget, "batch_size"),
    ("run", "--pretrain-steps", PretrainConfig, "steps"), ("run", "--results-dir", RunConfig, "results_dir"),
    ("run", "--dtype", RunConfig, "dtype"), ("run", "--prompt-format", RunConfig, "prompt_format"),
    ("run", "--threads", RunConfig, "threads"), ("run", "--eval-limit", RunConfig, "eval_limit"),
    ("plan", "--eval-batch-size", RunConfig, "eval_batch_size"), ("plan", "--batch-size", Budget, "batch_size"),
    ("publish", "--steps", Budget, "steps"), ("tune", "--pretrain-steps", PretrainConfig, "steps"),
])
def test_options_take_default_and_help_from_the_config_field(command, flag, cls, field):
    f = next(f for f in dataclasses.fields(cls) if f.name == field)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    option = _option(command, flag)
    assert option.default == default
    first_words = f.metadata["help"].split(";")[0].split(" ")[:3]
    assert " ".join(first_words).lower() in (option.help or "").lower(), (option.help, f.metadata["help"])


def test_a_command_with_its_own_default_says_so():
    assert _option("publish", "--threads").default == 2 and _option("tune", "--threads").default == 2
    assert _option("run", "--threads").default is None and _option("sweep", "--threads").default is None
    assert "[default: 2, the published results' count" in _option("publish", "--threads").help
    # sweep fills from its grid file first: None here, and the field's default shown
    steps = _option("sweep", "--steps")
    assert steps.default is None and f"[default: {Budget().steps}]" in steps.help
    assert _option("validate", "--steps").default == 2


def test_sweep_cells_take_the_fields_defaults(small):
    from cl_bench.cli.sweep import sweep_configs

    (config,) = sweep_configs("small-numbers", "align-only", "0", (), {}, (), (), "res", None, None, None, None, None,
                              None, None)
    assert config.budget == Budget() and config.pretrain == PretrainConfig()
    assert (config.model, config.device, config.eval_limit) == (RunConfig.model, RunConfig.device, None)


def test_python_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "cl_bench.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("clbench, version"), out.stderr


def _copy(src: Path, results: Path, stream: str, strategy: str, last_rows: list[list[float]]) -> None:
    for seed, row in enumerate(last_rows):
        doc = json.loads(src.read_text())
        doc["seed"] = doc["config"]["seed"] = seed
        doc["stream"]["name"] = doc["config"]["stream"] = stream
        doc["accuracy_matrix"][-1] = row
        dst = results / "runs" / stream / strategy / f"{seed}.json"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(json.dumps(doc))


def test_compare_without_stream_takes_the_default_stream_or_the_only_one(tmp_path):
    runs = FIXTURES / "runs" / "vision-audio"
    ft, joint = next((runs / "full-ft").glob("*seed0*")), next((runs / "joint").glob("*seed0*"))
    only = tmp_path / "only"
    _copy(ft, only, "other-stream", "full-ft", [[0.3, 0.4, 0.7], [0.31, 0.4, 0.7], [0.29, 0.4, 0.7]])
    _copy(joint, only, "other-stream", "joint", [[0.8, 0.85, 0.95], [0.82, 0.85, 0.95], [0.81, 0.85, 0.95]])
    out = CliRunner().invoke(main, ["compare", "joint", "full-ft", "--metric", "acc", "--results-dir", str(only),
                                    "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("other-stream: acc of joint (A) and full-ft (B) over 3 shared seeds")
    both = tmp_path / "both"
    for stream in ("other-stream", RunConfig.stream):
        _copy(ft, both, stream, "full-ft", [[0.3, 0.4, 0.7], [0.31, 0.4, 0.7]])
        _copy(joint, both, stream, "joint", [[0.8, 0.85, 0.95], [0.82, 0.85, 0.95]])
    out = CliRunner().invoke(main, ["compare", "joint", "full-ft", "--metric", "acc", "--results-dir", str(both),
                                    "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"{RunConfig.stream}: acc of joint (A) and full-ft (B) over 2 shared seeds")
    out = CliRunner().invoke(main, ["compare", "joint", "full-ft", "--results-dir", str(both), "--device", "cpu",
                                    "--stream", "other-stream"])
    assert out.exit_code == 0 and out.stdout.startswith("other-stream:"), out.output


def test_plot_writes_beside_the_results_it_reads(tmp_path, monkeypatch):
    import shutil

    res = tmp_path / "mine"
    shutil.copytree(FIXTURES, res)
    shutil.rmtree(res / "runs" / "vision-audio" / "broken")
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["plot", "--results-dir", "mine", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing under ./results/figures
    assert (res / "figures" / "vision-audio" / "pareto.png").exists()
    assert out.stdout.splitlines()[0].startswith(f"{Path('mine') / 'figures' / 'vision-audio'}: ")
