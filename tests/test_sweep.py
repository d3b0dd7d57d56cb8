"""clbench sweep: a grid of cells run locally or on a local Ray instance, skipped when complete, resumed after a
kill, failures listed while the other cells go on; publish is a sweep plus the leaderboard."""

import json
from pathlib import Path

import pytest
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_failing_cell_is_listed_with_its_log_and_the_others_go_on(small, cache_dir, tmp_path):
    from cl_bench import registry

    from helpers_strategies import CrashOnAudio

    registry.strategies.register("crash-on-audio", "helpers_strategies:CrashOnAudio", origin="tests")
    CrashOnAudio.crash = True  # the class's switch: other tests turn it off
    try:
        out = CliRunner().invoke(main, args(cache_dir, tmp_path / "r", "--strategies", "align-only,crash-on-audio",
                                            "--seeds", "0"))
    finally:
        CrashOnAudio.crash = False
        registry.strategies.unregister("crash-on-audio")
    assert out.exit_code == 1
    assert "sweep: 2 cells, 1 run, 0 reused, 1 failed" in out.output
    line = next(x for x in out.output.splitlines() if x.startswith("  failed: small-numbers: crash-on-audio steps 2 seed 0"))
    assert "RuntimeError: simulated crash" in line
    log = Path(line.split("(log: ")[1].rstrip(")"))
    assert "simulated crash" in log.read_text()
    assert "add --restart to start them over from their first stage" in out.output
    assert [s for s, *_ in results(tmp_path / "r").values()] == ["align-only"]


def test_bad_option_values_and_orders_fail_once_before_any_cell(small, cache_dir, tmp_path):
    out = CliRunner().invoke(main, args(cache_dir, tmp_path / "r", "--strategies", "align-only,lora", "--seeds", "0",
                                        "--set", "lr=abc"))
    assert out.exit_code != 0 and "sweep:" not in out.output
    assert out.output.strip().splitlines()[-1] == "Error: strategy 'lora' option 'lr' must be of type float, got 'abc'"
    out = CliRunner().invoke(main, args(cache_dir, tmp_path / "r", "--strategies", "align-only", "--seeds", "0",
                                        "--order", "zzz,yyy"))
    assert out.exit_code != 0 and "sweep:" not in out.output
    assert out.output.strip().splitlines()[-1] == (
        "Error: --order 'zzz,yyy' must name each new task of stream 'small-numbers' once (vision,audio), or be "
        "random:SEED")
    assert not (tmp_path / "r").exists()


def test_a_grid_file_error_names_the_file_and_the_key(tmp_path):
    import pytest

    from cl_bench.engines.sweep import load_grid_file

    grid = tmp_path / "grid.yaml"
    for text, message in [("seeds: [a]\n", "seeds: must be integers from 0 to 2147483647 (a list, e.g. [0, 1, 2]), "
                                            "got 'a'"),
                          ("seeds: [-1]\n", "seeds: must be integers from 0 to 2147483647 (a list, e.g. [0, 1, 2]), "
                                             "got -1"),
                          ("steps: ten\n", "steps: must be a positive integer, got 'ten'"),
                          ("strategies: {a: 1}\n", "strategies: must be a name or a list of them, got {'a': 1}"),
                          ("options: [lr]\n", "options: must be a mapping (name: value), got ['lr']")]:
        grid.write_text(text)
        with pytest.raises(ValueError) as e:
            load_grid_file(str(grid))
        assert str(e.value) == f"grid file {grid}: {message}"
    grid.write_text("seeds: [a]\n")
    out = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "-q"])
    assert out.exit_code != 0 and f"grid file {grid}: seeds:" in out.output and "--seeds" not in out.output


def test_an_unreachable_ray_address_fails_at_once_in_one_line():
    import socket

    import pytest

    from cl_bench.engines.sweep import RayEngine

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nothing listens on
    with pytest.raises(ValueError) as e:
        RayEngine(address=f"127.0.0.1:{port}").map([], [], None, lambda o: None)
    assert str(e.value).startswith(f"--address 127.0.0.1:{port}: nothing answers there (")
    assert str(e.value).endswith("start the cluster's head (ray start --head) or check the address")
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        RayEngine(address="nowhere").map([], [], None, lambda o: None)


@pytest.mark.slow
def test_restart_starts_a_cell_with_a_damaged_state_over(small, cache_dir, tmp_path):
    """A saved state whose checkpoint is gone (as a kill during an older clbench's clean-up left it) fails the cell
    with the way out; the sweep with restart runs it from its first stage."""
    import json as j

    from cl_bench import registry
    from cl_bench.config import Budget
    from cl_bench.engines.sweep import sweep
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    registry.strategies.register("crash-on-audio", "helpers_strategies:CrashOnAudio", origin="tests")
    try:
        from helpers_strategies import CrashOnAudio

        cfg = RunConfig(stream="small-numbers", strategy="crash-on-audio", seed=7, device="cpu",
                        budget=Budget(steps=2, batch_size=8), pretrain=PretrainConfig(steps=20), eval_limit=8,
                        results_dir=str(tmp_path / "r"), cache_dir=str(cache_dir))
        states = {w for w in (Path(cache_dir) / "runs").glob("*") if w.is_dir()}
        CrashOnAudio.crash = True
        try:
            run(cfg, progress=False, echo=lambda s: None)
        except RuntimeError:
            pass
        CrashOnAudio.crash = False
        [work] = {w for w in (Path(cache_dir) / "runs").glob("*") if w.is_dir()} - states  # this run's state
        for ck in work.glob("stage*.pt"):
            ck.unlink()
        said = []
        failed = sweep([cfg], progress=False, echo=said.append)
        assert failed[0].status == "failed" and "is damaged" in failed[0].error and "--restart" in failed[0].error
        again = sweep([cfg], progress=False, echo=said.append, restart=True)
        assert again[0].status == "done"
        doc = j.loads(Path(again[0].path).read_text())
        assert doc["status"] == "complete" and doc["timing"]["resumed_at_stages"] == []
    finally:
        registry.strategies.unregister("crash-on-audio")



@pytest.mark.slow
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
    assert bad.exit_code == 2 and "belong to none of the strategies align-only" in bad.output
    grid.write_text("strategy: [lora]\n")
    typo = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--cache-dir", str(cache_dir), "-q"])
    assert typo.exit_code == 2 and "unknown key(s) strategy" in typo.output


@pytest.mark.slow
def test_a_sweep_on_ray_survives_a_killed_worker_with_identical_results(small, cache_dir, tmp_path, monkeypatch):
    """Two cells on a local Ray instance, 2 CPUs each (so 2 torch threads, as the local sweep's --threads 2: the
    count is in the run key); the worker of the first to reach stage 1's save is killed once (SIGKILL), Ray runs the
    cell again, it resumes after stage 1; every result equals the local sweep's."""
    import os

    local = CliRunner().invoke(main, args(cache_dir, tmp_path / "local", "--strategies", "lora,full-ft", "--seeds",
                                          "0", "--threads", "2"))
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
