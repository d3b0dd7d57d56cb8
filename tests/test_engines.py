"""The sweep's engines beyond one machine: Ray's retries of a cell whose node died (a fake Ray for the bookkeeping, a
three-node Ray cluster on this machine for the real thing) and the SLURM engine (its parameters, and its jobs run
through submitit's local executor)."""

import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cl_bench.cli import main
from cl_bench.engines.sweep import Outcome, sweep
from cl_bench.errors import EnvironmentProblem, UsageError

TESTS = Path(__file__).resolve().parent


def args(cache_dir, results, *extra, threads=True):
    return ["sweep", "--stream", "small-numbers", "--steps", "5", "--batch-size", "8", "--pretrain-steps", "5",
            "--eval-limit", "8", "--device", "cpu", *(["--threads", "1"] if threads else []), "--cache-dir",
            str(cache_dir), "--results-dir", str(results), "-q", *extra]


def results(directory) -> dict:
    """run key -> (strategy, seed, accuracy matrix, item results) of every result file."""
    out = {}
    for f in Path(directory).rglob("*.json"):
        d = json.loads(f.read_text())
        out[d["run_key"]] = (d["config"]["strategy"], d["seed"], d["accuracy_matrix"], d["item_results"])
    return out


# --- Ray: a cell whose node died is run again, counted once ---------------------------------------------------------

class FakeRay:
    """Enough of Ray for RayEngine._run: each task's attempts answer from `script` (config seed -> one value per
    attempt: an Outcome, or an exception to raise from ray.get)."""

    class NodeDiedError(Exception):
        pass

    class WorkerCrashedError(Exception):
        pass

    exceptions = SimpleNamespace(NodeDiedError=NodeDiedError, WorkerCrashedError=WorkerCrashedError)

    def __init__(self, script):
        self.script, self.calls = script, []

    def remote(self, **kw):
        assert kw["max_retries"] == 0  # the engine retries, so that it can say so
        fake = self

        class Task:
            @staticmethod
            def remote(config, plugins, log_dir, threads, restart):
                fake.calls.append((config.seed, restart))
                return (config.seed, sum(seed == config.seed for seed, _ in fake.calls) - 1)

        return lambda fn: Task

    def wait(self, refs, num_returns):
        return refs[:1], refs[1:]

    def get(self, ref):
        seed, attempt = ref
        value = self.script[seed][attempt]
        if isinstance(value, Exception):
            raise value
        return value


def cell(seed):
    return SimpleNamespace(stream="s", strategy="lora", seed=seed, order=None, strategy_options={})


def test_ray_reruns_a_cell_whose_node_died_and_counts_it_once():
    from cl_bench.engines.sweep import RayEngine

    died, crashed = FakeRay.NodeDiedError("the node died"), FakeRay.WorkerCrashedError("the worker died")
    fake = FakeRay({
        0: [Outcome("s: lora seed 0", "done", path="a.json")],
        # the lost attempt wrote the complete result before its node went: the retry finds it, and this sweep ran it
        1: [died, Outcome("s: lora seed 1", "reused", path="b.json")],
        2: [died, crashed, died],  # lost more often than --max-retries 2 allows
    })
    seen = []
    out = RayEngine(max_retries=2)._run(fake, [cell(0), cell(1), cell(2)], [], None, seen.append, restart=True)
    assert [(o.status, o.retries) for o in out] == [
        ("done", ()), ("done", ("NodeDiedError",)), ("failed", ("NodeDiedError", "WorkerCrashedError"))]
    assert out[2].error == "NodeDiedError: the node died (3 attempts; --max-retries runs it more often)"
    assert len(seen) == 3 and {o.label for o in seen} == {o.label for o in out}  # each cell reported once
    # the first attempts restart as asked; the retries resume what the lost attempt saved
    assert sorted(fake.calls) == [(0, True), (1, False), (1, True), (2, False), (2, False), (2, True)]


def test_the_summary_names_retried_cells_and_puts_a_failure_s_log_on_its_first_line(monkeypatch):
    import cl_bench.engines.sweep as sw

    class Engine:
        name = "fake"

        def map(self, configs, plugins, log_dir, done, restart=False):
            out = [Outcome("a", "done", retries=("NodeDiedError",)),
                   Outcome("b", "failed", error="job 7 ended without a result; its stderr ends:\n    | Killed",
                           log="/jobs/7_0_log.err")]
            for o in out:
                done(o)
            return out

    monkeypatch.setattr(sw, "check_cells", lambda configs: None)
    said = []
    sweep([cell(0), cell(1)], Engine(), progress=False, echo=said.append)
    assert said[1:5] == ["sweep: 2 cells, 1 run, 0 reused, 1 failed",
                         "  retried: a: 1 time, after NodeDiedError",
                         "  failed: b: job 7 ended without a result; its stderr ends: (log: /jobs/7_0_log.err)",
                         "    | Killed"]


def remove_the_paused_node(cluster, marker: Path, results_dir: Path, removed: list, stop: threading.Event):
    """Once a result file is written and a cell has paused (helpers_engines.PauseOnce: `marker` holds its node's id),
    remove the node the paused cell runs on."""
    while not stop.is_set():
        node_id = marker.read_text().strip() if marker.exists() else ""
        if node_id and any(results_dir.rglob("*.json")):
            [node] = [n for n in cluster.worker_nodes if n.node_id == node_id]
            cluster.remove_node(node, allow_graceful=False)
            removed.append(node_id)
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_a_sweep_on_a_three_node_ray_cluster_survives_a_removed_node(small, cache_dir, tmp_path, monkeypatch):
    """A head (no CPUs: it only holds the driver) and two worker nodes of 1 CPU. Once the first result is written
    and a pause-once cell (LoRA, held at its second stage) runs, the node under that cell is removed. The cell runs
    again on the other node and resumes after its first stage; every cell is counted once, and the accuracy matrices
    (and items) equal a local sweep's at the same thread count."""
    from ray.cluster_utils import Cluster

    from cl_bench import registry

    cells = ["--strategies", "align-only,pause-once", "--seeds", "0,1"]
    registry.strategies.register("pause-once", "helpers_engines:PauseOnce", origin="tests")
    try:
        local = CliRunner().invoke(main, args(cache_dir, tmp_path / "local", *cells))  # also builds data and base
        assert local.exit_code == 0, local.output
        # the nodes' processes take the environment at their start: the test plug-ins' path, the pause's marker;
        # their sockets need a short path, and RAY_TMPDIR keeps the cluster's address file from other Ray users
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.setenv("CLBENCH_TEST_PAUSE", str(tmp_path / "paused"))
        ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        removed, stop = [], threading.Event()
        try:
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            hook = threading.Thread(target=remove_the_paused_node, daemon=True,
                                    args=(cluster, tmp_path / "paused", tmp_path / "ray", removed, stop))
            hook.start()
            out = CliRunner().invoke(main, args(cache_dir, tmp_path / "ray", *cells, "--engine", "ray",
                                                "--ray-address", cluster.address, "--cpus-per-cell", "1"))
            stop.set()
            hook.join(timeout=30)
        finally:
            stop.set()
            cluster.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    finally:
        registry.strategies.unregister("pause-once")
    assert out.exit_code == 0, out.output
    assert len(removed) == 1  # the paused cell's node went
    assert "sweep: 4 cells, 4 run, 0 reused, 0 failed" in out.output
    retried = [line for line in out.output.splitlines() if line.startswith("  retried: ")]
    # Ray names the loss by what it saw first: the node's death, or (rarely) the worker's connection going
    [line] = retried
    m = re.fullmatch(r"  retried: small-numbers: pause-once steps 5 seed ([01]): 1 time, after (NodeDied|WorkerCrashed)Error",
                     line)
    assert m, out.output
    assert len(results(tmp_path / "ray")) == 4
    assert results(tmp_path / "ray") == results(tmp_path / "local")
    resumed = {(d["config"]["strategy"], d["seed"]): d["timing"]["resumed_at_stages"]
               for d in (json.loads(f.read_text()) for f in (tmp_path / "ray").rglob("*.json"))}
    paused = int(m.group(1))  # Ray starts the queued cells in about, not exactly, the order given
    assert resumed == {("align-only", 0): [], ("align-only", 1): [], ("pause-once", paused): [1],
                       ("pause-once", 1 - paused): []}


# --- SLURM through submitit ------------------------------------------------------------------------------------------

def test_slurm_times_are_whole_minutes_rounded_up():
    from cl_bench.engines.slurm import slurm_minutes

    assert [slurm_minutes(t) for t in ("90", "30:30", "04:00:00", "1-12", "1-00:30", "0-00:00:30", " 2 ")] == [
        90, 31, 240, 2160, 1470, 1, 2]
    for bad in ("abc", "1:2:3:4", "1h", "0", "0:00:00", ""):
        with pytest.raises(UsageError, match="--slurm time="):
            slurm_minutes(bad)


def test_slurm_parameters_map_to_submitit_s_and_a_wrong_key_is_named():
    from cl_bench.engines.slurm import slurm_parameters

    valid = {"partition", "mem", "account", "setup", "array_parallelism", "exclusive", "qos"}
    assert slurm_parameters({"partition": "gpu", "mem": "16G", "time": "2:00:00", "array-parallelism": "4",
                             "setup": "module load cuda; source .venv/bin/activate", "exclusive": "true"}, valid) == {
        "timeout_min": 120, "slurm_partition": "gpu", "slurm_mem": "16G", "slurm_array_parallelism": 4,
        "slurm_setup": ["module load cuda", "source .venv/bin/activate"], "slurm_exclusive": True}
    assert slurm_parameters({}, valid) == {"timeout_min": 24 * 60}  # not submitit's 5 minutes
    with pytest.raises(UsageError, match=r"^--slurm cpus_per_task=: give it as --cpus-per-cell$"):
        slurm_parameters({"cpus_per_task": "4"}, valid)
    with pytest.raises(UsageError, match=r"^--slurm gpus=: give it as --gpus-per-cell$"):
        slurm_parameters({"gpus": "1"}, valid)
    with pytest.raises(UsageError) as e:
        slurm_parameters({"partion": "gpu"}, valid)
    assert str(e.value).startswith("--slurm partion= is not a SLURM parameter submitit knows; did you mean partition?")


def test_slurm_engine_settings_are_checked_before_any_job(tmp_path, monkeypatch):
    from cl_bench.engines.slurm import SlurmEngine, stderr_tail

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(EnvironmentProblem, match="sbatch is not on PATH.*--slurm-cluster local"):
        SlurmEngine(tmp_path / "jobs")
    with pytest.raises(UsageError, match=r"--cpus-per-cell must be a whole number \(at least 1\).*got 0.5"):
        SlurmEngine(tmp_path / "jobs", cluster="local", cpus_per_cell=0.5)
    with pytest.raises(UsageError, match="did you mean partition"):
        SlurmEngine(tmp_path / "jobs", cluster="local", parameters={"partiton": "gpu"})
    ex = SlurmEngine(tmp_path / "jobs", cluster="local", cpus_per_cell=3, parameters={"time": "10"}).executor()
    assert ex.cluster == "local" and ex._executor.parameters["timeout_min"] == 10
    assert stderr_tail("a\n\nb\n" + "".join(f"l{i}\n" for i in range(12)), 3) == "    | l9\n    | l10\n    | l11"


def test_a_bad_slurm_option_is_a_usage_error_before_any_job(small, cache_dir, tmp_path):
    out = CliRunner().invoke(main, args(cache_dir, tmp_path / "r", "--strategies", "align-only", "--seeds", "0",
                                        "--engine", "slurm", "--slurm-cluster", "local", "--slurm", "partiton=gpu"))
    assert out.exit_code == 2 and "did you mean partition?" in out.output and "sweep:" not in out.output
    assert not (tmp_path / "r").exists()


def test_a_job_that_ends_without_an_outcome_is_told_with_its_state_and_stderr_tail():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from cl_bench.engines.slurm import job_outcome

    class Job:
        job_id, state, paths = "81234_1", "OUT_OF_MEMORY", SimpleNamespace(stderr=Path("/jobs/81234_1_0_log.err"))

        def __init__(self, error, stderr):
            self.error, self.text = error, stderr

        def result(self):
            raise self.error

        def stderr(self):
            return self.text

    o = job_outcome(Job(UncompletedJobError("Job 81234_1 (task: 0) has not produced any output"), "a\nKilled\n"),
                    cell(3))
    assert (o.label, o.status, o.log) == ("s: lora seed 3", "failed", "/jobs/81234_1_0_log.err")
    assert o.error == ("job 81234_1 ended without a result (SLURM state OUT_OF_MEMORY); its stderr ends:\n"
                       "    | a\n    | Killed")
    trace = "Job (task=0) failed during processing with trace:\n----\nTraceback ...\nModuleNotFoundError: No module\n"
    o = job_outcome(Job(FailedJobError(trace), None), cell(3))
    assert o.error == "job 81234_1 raised ModuleNotFoundError: No module; it wrote no stderr"
    done = Outcome("s: lora seed 3", "done", path="r.json")
    assert job_outcome(SimpleNamespace(result=lambda: done), cell(3)) is done


def slurm_args(cache_dir, results, jobs, *extra, cpus="1"):
    return args(cache_dir, results, "--engine", "slurm", "--slurm-cluster", "local", "--slurm-folder", str(jobs),
                "--cpus-per-cell", cpus, "--slurm", "time=20", *extra, threads=False)


@pytest.mark.slow
def test_slurm_jobs_write_results_a_rerun_reuses_them_and_a_failing_cell_is_listed(small, cache_dir, tmp_path,
                                                                                    monkeypatch):
    from cl_bench import registry

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    registry.strategies.register("crash-on-audio", "helpers_strategies:CrashOnAudio", origin="tests")
    try:  # crash-on-audio: registered in this process only, so the job registers it too (run_cell's plugins)
        cmd = slurm_args(cache_dir, tmp_path / "r", tmp_path / "jobs", "--strategies", "align-only,crash-on-audio",
                         "--seeds", "0", cpus="2")
        first = CliRunner().invoke(main, cmd)
        written = results(tmp_path / "r")
        again = CliRunner().invoke(main, cmd)
    finally:
        registry.strategies.unregister("crash-on-audio")
    assert first.exit_code == 1, first.output
    assert "sweep: 2 cells, 1 run, 0 reused, 1 failed" in first.output
    line = next(x for x in first.output.splitlines() if x.startswith("  failed: small-numbers: crash-on-audio"))
    assert "RuntimeError: simulated crash" in line  # the cell's own error, from inside its job
    assert "simulated crash" in Path(line.split("(log: ")[1].rstrip(")")).read_text()
    [(strategy, seed, _, _)] = written.values()
    assert (strategy, seed) == ("align-only", 0)
    [doc] = [json.loads(f.read_text()) for f in (tmp_path / "r").rglob("*.json")]
    assert doc["config"]["threads"] == 2  # the job's CPUs (no --threads given)
    assert list((tmp_path / "jobs").glob("*_log.err"))  # the jobs' logs are in --slurm-folder
    assert again.exit_code == 1 and "sweep: 2 cells, 0 run, 1 reused, 1 failed" in again.output
    assert results(tmp_path / "r") == written


@pytest.mark.slow
def test_a_slurm_job_killed_mid_cell_is_listed_with_its_stderr_and_the_rerun_resumes(small, cache_dir, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    cmd = slurm_args(cache_dir, tmp_path / "r", tmp_path / "jobs", "--strategies", "align-only", "--seeds", "4")
    monkeypatch.setenv("CLBENCH_KILL_AT", "stage-saved:1")  # the job's process SIGKILLs itself there
    killed = CliRunner().invoke(main, cmd)
    monkeypatch.delenv("CLBENCH_KILL_AT")
    assert killed.exit_code == 1 and "sweep: 1 cells, 0 run, 0 reused, 1 failed" in killed.output
    lines = killed.output.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("  failed: small-numbers: align-only steps 5 seed 4: job "))
    assert "ended without a result; its stderr ends: (log: " in lines[i]
    err = Path(lines[i].split("(log: ")[1].rstrip(")"))
    assert err.parent == tmp_path / "jobs" and err.name.endswith("_log.err")
    tail = [x.removeprefix("    | ") for x in lines[i + 1:] if x.startswith("    | ")]
    assert tail and all(t in err.read_text() for t in tail)
    assert not results(tmp_path / "r")
    resumed = CliRunner().invoke(main, cmd)
    assert resumed.exit_code == 0 and "sweep: 1 cells, 1 run, 0 reused, 0 failed" in resumed.output
    [doc] = [json.loads(f.read_text()) for f in (tmp_path / "r").rglob("*.json")]
    assert doc["timing"]["resumed_at_stages"] == [1]
