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


WRONG_ENCODER = '''
from cl_bench.models.encoders import ImagePatches


class Wrong(ImagePatches):
    """8x8 patches (64 values a token) that declare out_dim 32."""

    name = "wrong"

    def __init__(self):
        super().__init__()
        self.out_dim = 32
'''


def test_an_encoder_whose_out_dim_is_wrong_is_one_line_before_training(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    from cl_bench.models.encoders import build_encoder
    from cl_bench.run.encoder_check import EncoderShapeError, check_encoders

    class Split(list):  # the part of a datasets.Dataset the check reads
        def select(self, rows):
            return {"input": [self[i] for i in rows]}

    (tmp_path / "wrong_enc.py").write_text(WRONG_ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    digits = Split([np.zeros((8, 8), dtype=np.float32)] * 6)
    stream = SimpleNamespace(experiences=[SimpleNamespace(name="vision", modality="image", train=digits)])
    check_encoders({"image": build_encoder("image")}, stream)  # (4, 1, 64), as declared: nothing to say
    with pytest.raises(EncoderShapeError) as e:
        check_encoders({"image": build_encoder("image", "wrong_enc:Wrong")}, stream)
    assert str(e.value) == ("modality 'image': encoder 'wrong' (wrong_enc:Wrong) gives shape (4, 1, 64), expected "
                            "(4, tokens >= 1, 32) (out_dim 32); set its out_dim to 64, or make forward return 32 "
                            "values per token (on 4 training inputs of task 'vision')")


@pytest.mark.slow
def test_run_with_a_wrong_out_dim_fails_in_one_line(tmp_path, monkeypatch, cache_dir, small):
    (tmp_path / "wrong_enc.py").write_text(WRONG_ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--strategy", "align-only", "--encoder",
                                    "image=wrong_enc:Wrong", "--steps", "5", "--pretrain-steps", "5", "--eval-limit",
                                    "8", "--batch-size", "4", "--threads", "1", "--device", "cpu", "-q",
                                    "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path / "res")])
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output and out.output.count("Error:") == 1, out.output
    assert out.output.strip().splitlines()[-1] == (
        "Error: modality 'image': encoder 'wrong' (wrong_enc:Wrong) gives shape (4, 1, 64), expected "
        "(4, tokens >= 1, 32) (out_dim 32); set its out_dim to 64, or make forward return 32 values per token "
        "(on 4 training inputs of task 'vision')")
    assert not list((tmp_path / "res").rglob("*.json"))  # nothing trained, nothing written


def test_sweep_axes_base_seeds_and_budgets_give_every_cell(small, tmp_path):
    from cl_bench.cli.sweep import sweep_configs
    from cl_bench.engines.sweep import label

    configs = sweep_configs("small-numbers", "align-only", "0,1", (), {}, (), (), "res", None, None, None, None, None,
                            None, None, base_seeds="0,2", budgets="0.5,1,2.25")
    got = sorted((c.budget.steps, c.pretrain.seed, c.seed) for c in configs)
    steps = Budget().steps
    assert got == sorted((round(steps * m), b, s) for m in (0.5, 1, 2.25) for b in (0, 2) for s in (0, 1))
    assert all(c.pretrain.steps == PretrainConfig().steps for c in configs)
    assert len({label(c) for c in configs}) == len(configs)  # each cell named apart in the sweep's lines
    grid = tmp_path / "grid.yaml"
    grid.write_text("budgets: [0.5, -1]\n")
    out = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--stream", "small-numbers"])
    assert out.exit_code == 2 and "budgets: must be positive multiples" in out.output
    out = CliRunner().invoke(main, ["sweep", "--budgets", "0.5,x", "--stream", "small-numbers"])
    assert out.exit_code == 2 and "--budgets" in out.output
