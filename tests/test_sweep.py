"""clbench sweep: a grid of cells run locally or on a local Ray instance, skipped when complete, resumed after a
kill, failures listed while the other cells go on; publish is a sweep plus the leaderboard."""

import json
from pathlib import Path

from click.testing import CliRunner

from cl_bench.cli import main

TESTS = Path(__file__).resolve().parent


def args(cache_dir, results, *extra):
    return ["sweep", "--stream", "small-numbers", "--steps", "2", "--batch-size", "8", "--pretrain-steps", "20",
            "--eval-limit", "8", "--device", "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(results),
            "-q", *extra]


def results(directory) -> dict:
    """run key -> (strategy, seed, options, accuracy matrix, item results) of every result file."""
    out = {}
    for f in Path(directory).rglob("*.json"):
        d = json.loads(f.read_text())
        out[d["run_key"]] = (d["config"]["strategy"], d["seed"], d["config"]["strategy_options"],
                             d["accuracy_matrix"], d["item_results"])
    return out


def test_a_local_sweep_runs_every_cell_once_and_skips_complete_ones(small, cache_dir, tmp_path):
    cmd = args(cache_dir, tmp_path / "r", "--strategies", "align-only,lora", "--seeds", "0,1", "--set", "lr=1e-3,3e-3")
    out = CliRunner().invoke(main, cmd)
    assert out.exit_code == 0, out.output
    first = results(tmp_path / "r")
    # lora: 2 lr values x 2 seeds; align-only has no lr option: its defaults, 2 seeds
    cells = sorted((s, seed, o.get("lr")) for s, seed, o, _, _ in first.values())
    assert [c[:2] for c in cells] == [("align-only", 0), ("align-only", 1)] + [("lora", 0)] * 2 + [("lora", 1)] * 2
    assert {c[2] for c in cells if c[0] == "lora"} == {0.001, 0.003}
    assert "sweep: 6 cells, 6 run, 0 reused, 0 failed" in out.output
    again = CliRunner().invoke(main, cmd)
    assert again.exit_code == 0 and "sweep: 6 cells, 0 run, 6 reused, 0 failed" in again.output
    assert results(tmp_path / "r") == first


def test_a_failing_cell_is_listed_with_its_log_and_the_others_go_on(small, cache_dir, tmp_path):
    out = CliRunner().invoke(main, args(cache_dir, tmp_path / "r", "--strategies", "align-only,lora", "--seeds", "0",
                                        "--set", "lr=-1"))
    assert out.exit_code == 1
    assert "sweep: 2 cells, 1 run, 0 reused, 1 failed" in out.output
    line = next(x for x in out.output.splitlines() if x.startswith("  failed: small-numbers: lora lr=-1 seed 0"))
    assert "ValueError: LoRAConfig: lr and projector_lr must be > 0" in line
    log = Path(line.split("(log: ")[1].rstrip(")"))
    assert "LoRAConfig: lr and projector_lr must be > 0" in log.read_text()
    assert [s for s, *_ in results(tmp_path / "r").values()] == ["align-only"]


def test_a_grid_file_and_an_option_no_strategy_has(small, cache_dir, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("streams: [small-numbers]\nstrategies: [align-only]\nseeds: [3]\nsteps: 2\nbatch_size: 8\n"
                    "pretrain_steps: 20\neval_limit: 8\ndevice: cpu\n")
    out = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--cache-dir", str(cache_dir), "--results-dir",
                                    str(tmp_path / "r"), "-q"])
    assert out.exit_code == 0, out.output
    assert [(s, seed) for s, seed, *_ in results(tmp_path / "r").values()] == [("align-only", 3)]
    bad = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--set", "ewc-lambda=1,2", "--cache-dir",
                                    str(cache_dir), "--results-dir", str(tmp_path / "r"), "-q"])
    assert bad.exit_code == 1 and "belong to none of the strategies align-only" in bad.output
    grid.write_text("strategy: [lora]\n")
    typo = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--cache-dir", str(cache_dir), "-q"])
    assert typo.exit_code == 1 and "unknown key(s) strategy" in typo.output


def test_a_sweep_on_ray_survives_a_killed_worker_with_identical_results(small, cache_dir, tmp_path, monkeypatch):
    """Two cells on a local Ray instance, 2 CPUs each (so 2 torch threads, as the local sweep's); the worker of the
    first to reach stage 1's save is killed once (SIGKILL), Ray runs the cell again, it resumes after stage 1;
    every result equals the local sweep's."""
    import os

    local = CliRunner().invoke(main, args(cache_dir, tmp_path / "local", "--strategies", "lora,full-ft", "--seeds",
                                          "0"))
    assert local.exit_code == 0, local.output
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CLBENCH_KILL_AT", "stage-saved:1")
    monkeypatch.setenv("CLBENCH_KILL_ONCE", str(tmp_path / "killed-once"))
    out = CliRunner().invoke(main, args(cache_dir, tmp_path / "ray", "--strategies", "lora,full-ft", "--seeds", "0",
                                        "--engine", "ray", "--cpus-per-cell", "2"))
    assert out.exit_code == 0, out.output
    assert (tmp_path / "killed-once").exists()  # a worker was killed
    assert "sweep: 2 cells, 2 run, 0 reused, 0 failed" in out.output
    assert results(tmp_path / "ray") == results(tmp_path / "local")
    resumed = [json.loads(f.read_text())["timing"]["resumed_at_stages"] for f in (tmp_path / "ray").rglob("*.json")]
    assert sorted(resumed) == [[], [1]]
