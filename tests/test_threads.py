"""CPU threads: a run takes its share of the machine, says how many threads it used, and keys the count."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.run import threads
from cl_bench.run.runner import RunConfig, run


def hold(path):
    """A process that holds the file lock at `path` until its standard input closes (a run in progress)."""
    code = textwrap.dedent(f"""
        import sys
        from filelock import FileLock
        lock = FileLock({str(path)!r}); lock.acquire(); print("held", flush=True); sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def release(p):
    p.stdin.close()
    p.wait(timeout=30)


def test_the_default_shares_the_cpus_among_the_runs_active_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    active = tmp_path / "runs" / "active"
    active.mkdir(parents=True)
    (active / "killed.lock").touch()  # a lock file nobody holds: a killed run's, removed on the way
    assert threads.active_runs(tmp_path) == 0 and not (active / "killed.lock").exists()
    assert threads.choose(None, threads.active_runs(tmp_path)) == 4
    holders = [hold(active / f"r{i}.lock") for i in range(3)]
    try:
        assert threads.active_runs(tmp_path) == 3
        assert threads.choose(None, threads.active_runs(tmp_path)) == 1  # 4 CPUs for 4 runs
        release(holders.pop())
        assert threads.choose(None, threads.active_runs(tmp_path)) == 1  # 4 // 3
        release(holders.pop())
        assert threads.choose(None, threads.active_runs(tmp_path)) == 2  # 4 // 2
        assert threads.choose(3, threads.active_runs(tmp_path)) == 3  # a given count is kept, whatever the load
    finally:
        for p in holders:
            release(p)


def test_a_run_marks_itself_active_while_it_runs(tmp_path):
    import contextlib

    with contextlib.ExitStack() as held:
        assert threads.present(held, tmp_path) == 0
        with contextlib.ExitStack() as second:
            assert threads.present(second, tmp_path) == 1  # sees the first
            assert threads.active_runs(tmp_path) == 2
        assert threads.active_runs(tmp_path) == 1
    assert threads.active_runs(tmp_path) == 0 and list((tmp_path / "runs" / "active").iterdir()) == []


def test_available_cpus_is_the_affinity_mask():
    assert threads.available_cpus() == min(len(os.sched_getaffinity(0)), threads.available_cpus())
    assert threads.available_cpus() >= 1


def test_a_bad_thread_count_names_the_field():
    with pytest.raises(ValueError, match=r"RunConfig.threads must be in \[1, 1024\]"):
        RunConfig(threads=0)


@pytest.mark.slow
def test_the_count_is_used_recorded_and_keyed(small, cache_dir, tmp_path):
    before = torch.get_num_threads()
    cfg = RunConfig(stream="small-numbers", strategy="align-only", device="cpu", budget=Budget(steps=1, batch_size=8),
                    pretrain=PretrainConfig(steps=20), eval_limit=4, threads=1, results_dir=str(tmp_path),
                    cache_dir=str(cache_dir))
    try:
        one, _ = run(cfg, progress=False, echo=lambda s: None)
        assert one["environment"]["torch_threads"] == 1 and one["config"]["threads"] == 1
        two, _ = run(dataclasses.replace(cfg, threads=2), progress=False, echo=lambda s: None)
        assert two["environment"]["torch_threads"] == 2
        assert one["run_key"] != two["run_key"]  # float sums differ across counts: another run
        # the default resolves to a count (the CPUs available here, no other run active) and keys that count
        auto, _ = run(dataclasses.replace(cfg, threads=None), progress=False, echo=lambda s: None)
        n = threads.available_cpus()
        assert auto["environment"]["torch_threads"] == n
        assert auto["run_key"] == {1: one, 2: two}[n]["run_key"] if n in (1, 2) else auto["run_key"] not in (
            one["run_key"], two["run_key"])
    finally:
        torch.set_num_threads(before)


def test_the_summary_warns_when_steps_are_far_slower_than_the_benchmark():
    import copy
    import json
    from pathlib import Path

    from cl_bench.reporting.summary import REFERENCE_SECONDS_PER_EXAMPLE, format_summary, slow_steps_warning

    doc = json.loads((Path(__file__).parent / "fixtures/results/runs/vision-audio/full-ft/"
                      "mixtral-tiny-seed0-full0.json").read_text())
    per_step = REFERENCE_SECONDS_PER_EXAMPLE["mixtral-tiny"] * doc["config"]["budget"]["batch_size"]
    doc["environment"].update(device="cpu", torch_threads=2)
    for k in ("acc", "bwt", "fwt", "forgetting", "text_retention"):  # an older schema's file: the summary needs them
        doc["metrics"].setdefault(k, None)
    for s in doc["stages"]:
        s["train_stats"]["seconds_per_step"] = 2 * per_step  # loaded, but within reason
    assert slow_steps_warning(doc) is None and "warning" not in format_summary(doc)
    slow = copy.deepcopy(doc)
    slow["stages"][-1]["train_stats"]["seconds_per_step"] = 40 * per_step
    assert slow_steps_warning(slow) == (
        "warning: training steps took 40x the benchmark's time per example (bench/step_time.py: 0.07 s a step of 32 "
        "on a 2-core CPU); other processes may be using these CPUs: this run used 2 thread(s); run fewer at once, or "
        "give each fewer with --threads N")
    assert slow_steps_warning(slow) in format_summary(slow)
    slow["environment"]["device"] = "cuda:0"  # the benchmark is a CPU's
    assert slow_steps_warning(slow) is None


@pytest.mark.slow
def test_a_run_shares_again_with_the_runs_that_started_beside_it(small, cache_dir, tmp_path, monkeypatch):
    """Runs started together may not see each other as they start; a run counts again once its stream and base are
    ready, and trains and is keyed with that count. Here it saw no other run at its start (present() says 0) but one
    is active by then: of 4 CPUs it takes 2, not 4."""
    real_present = threads.present
    monkeypatch.setattr(threads, "present", lambda held, cache: (real_present(held, cache), 0)[1])
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    cfg = RunConfig(stream="small-numbers", strategy="align-only", device="cpu", budget=Budget(steps=1, batch_size=8),
                    pretrain=PretrainConfig(steps=20), eval_limit=4, results_dir=str(tmp_path), cache_dir=str(cache_dir))
    before = torch.get_num_threads()
    other = hold(cache_dir / "runs" / "active" / "beside.lock")
    try:
        doc, _ = run(cfg, progress=False, echo=lambda s: None)
    finally:
        release(other)
        torch.set_num_threads(before)
    assert doc["environment"]["torch_threads"] == 2


def test_a_given_count_that_crowds_the_cpus_is_warned_of(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.crowding(None, 3) is None  # the default shares the CPUs
    assert threads.crowding(2, 0) is None and threads.crowding(1, 1) is None
    assert threads.crowding(2, 1) == (
        "warning: --threads 2 beside 1 other clbench run on this cache asks for at least 3 threads on 2 CPUs, and "
        "threads that wait for a CPU slow every step (bench/threads.py measures runs side by side); run them one "
        "after another, or leave --threads out to share the CPUs (another count gives another run key)")
    assert "beside 2 other clbench runs" in threads.crowding(1, 2)
    assert threads.crowding(3, 0).startswith("warning: --threads 3 asks for at least 3 threads on 2 CPUs")
    assert "give --threads 2 or fewer" in threads.crowding(3, 0)


def test_a_run_says_so_as_it_starts_and_a_sweep_shows_it(tmp_path, monkeypatch):
    """The run's own path: its presence lock counts the run already active, and the warning is its first line, before
    the stream is built (stopped there); a sweep shows a cell's warning lines as the cell ends."""
    import cl_bench.engines.sweep as sw
    import cl_bench.run.runner as runner
    from cl_bench.engines.sweep import Outcome, sweep

    monkeypatch.setattr(threads, "available_cpus", lambda: 2)

    def stop(*a, **k):
        raise RuntimeError("stopped before the stream")

    monkeypatch.setattr(runner, "_stream", stop)
    cfg = RunConfig(stream="small-numbers", strategy="align-only", device="cpu", threads=2,
                    results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path))
    before = torch.get_num_threads()
    other = hold(tmp_path / "runs" / "active" / "beside.lock")
    said = []
    try:
        with pytest.raises(RuntimeError, match="stopped before the stream"):
            run(cfg, progress=False, echo=said.append)
        assert said == [threads.crowding(2, 1)]
        said.clear()  # alone, nothing to say
        release(other)
        with pytest.raises(RuntimeError, match="stopped before the stream"):
            run(cfg, progress=False, echo=said.append)
        assert said == []
    finally:
        other.poll() is None and release(other)
        torch.set_num_threads(before)

    class Engine:
        name = "fake"

        def map(self, configs, plugins, log_dir, done, restart=False):
            out = [Outcome("a", "done", warnings=("warning: crowded",)), Outcome("b", "done")]
            for o in out:
                done(o)
            return out

    monkeypatch.setattr(sw, "check_cells", lambda configs: None)
    said = []
    sweep([cfg, cfg], Engine(), progress=False, echo=said.append)
    assert said[:3] == ["a: warning: crowded", "a: done (0.0 s)", "b: done (0.0 s)"]
