"""Kills and concurrency, in real processes: a run SIGKILLed at any point resumes to the uninterrupted result,
and two identical runs at once leave one correct result; neither leaves a temporary or corrupt file."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cl_bench.results import check_result

pytestmark = pytest.mark.slow  # every test here is an end-to-end run

CLBENCH = str(Path(sys.executable).parent / "clbench")
# a small stream build (9 speakers) and tiny budgets: each process takes seconds
ARGS = ["run", "--strategy", "full-ft", "--steps", "3", "--batch-size", "4", "--pretrain-steps", "4",
        "--eval-limit", "16", "--device", "cpu", "-q", "-s", "train-speakers=6", "-s", "val-speakers=2",
        "-s", "test-speakers=1", "--threads", "1"]  # a count given: runs started together are the same run


def clbench(cwd: Path, cache: Path, kill_at: str | None = None, args=ARGS) -> subprocess.Popen:
    env = {**os.environ, "CLBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CLBENCH_KILL_AT", None)
    if kill_at:
        env["CLBENCH_KILL_AT"] = kill_at
    return subprocess.Popen([CLBENCH, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    return p.returncode, out + err


def leftovers(*roots: Path) -> list[Path]:
    """Temporary files and half-built directories (lock files are not leftovers: they are reused)."""
    return [p for root in roots for p in root.rglob("*")
            if p.name.endswith(".tmp") or ".tmp-" in p.name]


def result_of(cwd: Path) -> dict:
    (f,) = (cwd / "my-results" / "runs").rglob("*.json")
    return json.loads(f.read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (ARGS) on its own cold cache, in a process started at once and waited for when its
    result is asked for (`reference()` -> (result document, its cache)): the killed runs go on beside it, and its
    cache's built data and base model are copied to the tests whose subject is not a cold cache."""
    root = tmp_path_factory.mktemp("reference")
    proc, held = clbench(root, root / "cache"), []

    def get() -> tuple[dict, Path]:
        if not held:
            rc, out = finish(proc)
            assert rc == 0, out
            held.append(result_of(root))
        return held[0], root / "cache"

    yield get
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def warm_cache(reference, cache: Path) -> Path:
    """`cache` holding the reference run's built data and base model (keyed by their options, as the runs here
    share them), and nothing else: no run's saved state, no shared fit."""
    _, built = reference()
    for part in ("data", "models"):
        shutil.copytree(built / part, cache / part)
    return cache


def test_a_run_killed_at_every_point_resumes_to_the_uninterrupted_result(tmp_path, reference):
    dir_ = tmp_path / "killed"
    dir_.mkdir()
    cache = dir_ / "cache"  # cold: the first kill is inside a dataset's build
    for point in ("build:audio-*",  # a dataset written, not yet in place
                  "pre-training the base model:step2",
                  "vision:step2",  # inside the first stage
                  "stage-saved:1",  # between stages
                  "write:mixtral-tiny-seed0-*"):  # the result file's temporary copy written, not yet renamed
        rc, out = finish(clbench(dir_, cache, kill_at=point))
        assert rc == -signal.SIGKILL, (point, rc, out)
        assert not list((dir_ / "my-results").rglob("*.json")), point  # no result, complete or partial
    rc, out = finish(clbench(dir_, cache))
    assert rc == 0, out
    ref, _ = reference()
    assert "holds every stage; writing its result" in out  # the state saved before the last kill: complete
    doc = result_of(dir_)
    assert check_result(doc) == []
    for key in ("accuracy_matrix", "item_results", "extra_accuracy", "metrics", "run_key"):
        assert doc[key] == ref[key], key
    assert doc["base_model"]["weights_sha256"] == ref["base_model"]["weights_sha256"]
    assert doc["timing"]["resumed_at_stages"] == [0, 1, 2]
    assert leftovers(dir_) == []


def test_two_identical_runs_at_once_leave_one_correct_result(tmp_path):
    cache = tmp_path / "cache"
    procs = [clbench(tmp_path, cache) for _ in range(2)]  # both start on an empty cache
    outcomes = [finish(p) for p in procs]
    for rc, out in outcomes:  # each finished it, or was told the other is running it (and where)
        assert rc == 0 or (rc == 1 and "this run is in progress in another process" in out), out
    assert 0 in [rc for rc, _ in outcomes]
    files = list((tmp_path / "my-results" / "runs").rglob("*.json"))
    assert len(files) == 1 and check_result(json.loads(files[0].read_text())) == []
    assert leftovers(tmp_path) == []
    # the data and the base model were built once: one entry each, whole
    data = [p for p in (cache / "data" / "numbers").iterdir() if p.is_dir()]
    assert sorted(p.name.split("-")[0] for p in data) == ["audio", "image", "text", "vision"]  # image-plus-audio
    assert len([p for p in (cache / "models").iterdir() if p.is_dir()]) == 1


SWEEP = ["sweep", "--stream", "vision-audio", "--strategies", "full-ft", "--seeds", "0", "--steps", "3",
         "--batch-size", "4", "--pretrain-steps", "4", "--eval-limit", "16", "--device", "cpu", "-q",
         "-s", "train-speakers=6", "-s", "val-speakers=2", "-s", "test-speakers=1", "--threads", "1"]


def test_a_sweep_killed_while_a_finished_cell_cleans_up_leaves_nothing_stuck(tmp_path, reference):
    """A finished cell writes its result, then retires its saved state. A SIGKILL at each step of the clean-up in
    turn, each sweep into a results directory of its own: each next sweep meets the state the kill before it left
    (it used to fail on every retry with a half-deleted state) and runs; a last sweep finds the state the last kill
    left and runs; a rerun into a killed sweep's directory reuses its result. Every result the same; nothing left
    behind. (The data and base model come built.)"""
    cache = warm_cache(reference, tmp_path / "cache")
    docs = []
    for i, point in enumerate(("retire:before", "retire:renamed", "retire:deleting")):
        where = ["--results-dir", f"a{i}"]
        rc, out = finish(clbench(tmp_path, cache, kill_at=point, args=[*SWEEP, *where]))
        assert rc == -signal.SIGKILL, (point, rc, out)
        (path,) = (tmp_path / f"a{i}" / "runs").rglob("*.json")  # written before the clean-up began
        docs.append(json.loads(path.read_text()))
    rc, out = finish(clbench(tmp_path, cache, args=[*SWEEP, "--results-dir", "b"]))
    assert rc == 0 and "sweep: 1 cells, 1 run, 0 reused, 0 failed" in out, out
    (path,) = (tmp_path / "b" / "runs").rglob("*.json")
    docs.append(json.loads(path.read_text()))
    rc, out = finish(clbench(tmp_path, cache, args=[*SWEEP, "--results-dir", "a2"]))
    assert rc == 0 and "sweep: 1 cells, 0 run, 1 reused, 0 failed" in out, out
    for doc in docs[1:]:
        for key in ("accuracy_matrix", "item_results", "metrics", "run_key"):
            assert doc[key] == docs[0][key], key
    states = [p for p in (cache / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert [p.name for p in states] == ["active"] and list(states[0].iterdir()) == []  # no run's state, none active
    assert leftovers(tmp_path) == []
