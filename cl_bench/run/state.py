"""A run's resumable state: the run key's lock, the state saved after each finished stage, and its clean-up.

The state lives in the cache under runs/<key>/: state.json (accuracy rows, stage records) and the
strategy's weights of the last finished stage (stage<N>.pt). Running the same configuration again
resumes after the last stage saved.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from cl_bench import faults
from cl_bench.errors import EnvironmentProblem
from cl_bench.results import atomic_torch_save, atomic_write_json, sweep_stale


def hold_lock(held: contextlib.ExitStack, cache: Path, key: str, wait: bool, echo) -> None:
    """Take the run key's lock for as long as `held` is open; ValueError (or, with `wait`, waiting) when
    another process holds it."""
    from filelock import FileLock, Timeout

    (cache / "runs").mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache / "runs" / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise EnvironmentProblem(f"this run is in progress in another process (its state: {cache / 'runs' / key}); "
                                     "wait for it to finish, then run the same command to get its result") from None
        echo(f"the same run is in progress in another process; waiting for it ({cache / 'runs' / key})")
        lock.acquire()
    held.callback(lock.release)


def remove_stale(result_path: Path, cache: Path, key: str) -> None:
    """What killed processes left: this run's temporary files (its lock is held, so they are a killed holder's),
    older temporary result files beside it and half-built cache entries."""
    for stale in [*result_path.parent.glob(f".{result_path.name}.*.tmp"), *(cache / "runs" / key).glob(".*.tmp")]:
        stale.unlink(missing_ok=True)
    sweep_stale(result_path.parent, ".*.tmp")
    for sub in ("models", "data", "data/numbers", "runs"):
        sweep_stale(cache / sub, "*.tmp-*")
    sweep_stale(cache / "shared", ".*.tmp")  # a stored fit's or row's temporary copy (results.atomic_*)
    sweep_stale(cache / "runs", f".*{RETIRED}*")  # a finished run's state, renamed away by a process killed after
    sweep_stale(Path(tempfile.gettempdir()), "clbench-speech-*")


def save(work: Path, state: dict, strategy) -> None:
    """Write the state after a finished evaluation, with the strategy's weights."""
    # Each stage's checkpoint has its own name and is written before the state that names
    # it, so a kill at any point leaves a state whose checkpoint exists; older ones go last.
    n = len(state["rows"]) - 1
    atomic_torch_save(work / f"stage{n}.pt", strategy.state_dict())
    atomic_write_json(work / "state.json", {**state, "checkpoint": f"stage{n}.pt"})
    for old in work.glob("stage*.pt"):
        if old.name != f"stage{n}.pt":
            old.unlink(missing_ok=True)


def load(work: Path, strategy, echo) -> dict | None:
    """The saved state of this run with the strategy's weights restored, or None when there is none; ValueError
    naming --restart when it is damaged."""
    import torch

    path = work / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        if "items" not in state or "routing" not in state:  # written by a clbench that kept less
            echo(f"the saved state in {work} predates per-item results or the routing analysis; starting the run over")
            shutil.rmtree(work, ignore_errors=True)
            return None
        check(state, len(strategy.context.tasks))
        checkpoint = work / state.pop("checkpoint")
        if len(state["rows"]) == len(strategy.context.tasks):
            # every stage finished (its result was written, or about to be, when the process stopped): the result
            # needs no weights, so a checkpoint lost in the clean-up cannot keep the run from finishing
            echo(f"the saved state in {work} holds every stage; writing its result")
            return state
        weights = torch.load(checkpoint, map_location=strategy.context.device, weights_only=True)
        strategy.load_state_dict(weights)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, EOFError) as e:
        # json, torch.load and load_state_dict raise all of these for a damaged or foreign state
        raise EnvironmentProblem(f"the saved state of this run in {work} is damaged ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else e!r}); run the same command with "
                                 "--restart to start it over") from None
    echo(f"resuming after stage {len(state['rows']) - 1} of {len(state['rows'][0]) - 1}, the last one saved "
         f"(state in {work}; --restart to start over)")
    return state


def check(state: dict, tasks: int) -> None:
    """A resume state must be one row per evaluation so far, of one entry per task, with one stage record per
    finished stage: anything else would give an inconsistent result."""
    rows = state["rows"]
    if not (isinstance(rows, list) and 1 <= len(rows) <= tasks):
        raise ValueError(f"{len(rows) if isinstance(rows, list) else rows!r} rows for a stream of {tasks} tasks")
    for key in ("items", "routing"):
        if len(state[key]) != len(rows):
            raise ValueError(f"{len(state[key])} {key} rows for {len(rows)} accuracy rows")
    if len(state["stages"]) != len(rows) - 1:
        raise ValueError(f"{len(state['stages'])} stage records for {len(rows) - 1} finished stages")
    if any(len(r) != tasks or not all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in r) for r in rows):
        raise ValueError(f"an accuracy row is not {tasks} values in [0, 1]")
    if not isinstance(state["checkpoint"], str) or "/" in state["checkpoint"]:
        raise ValueError(f"checkpoint {state['checkpoint']!r} is not a file name")


RETIRED = ".retired-"  # runs/.<key>.retired-<pid>: a finished run's state on its way out


def retire(work: Path) -> None:
    """Remove a finished run's state (the result file now holds everything), crash-safely: the directory is first
    renamed away in one step, so that a kill at any point leaves either the whole state (a later run of the key
    resumes after its last stage and writes the same result) or a retired directory that nothing reads (removed
    by a later run's remove_stale), never a state missing its checkpoint."""
    import os

    if not work.exists():
        return
    faults.point("retire:before")
    gone = work.with_name(f".{work.name}{RETIRED}{os.getpid()}")
    os.replace(work, gone)
    faults.point("retire:renamed")
    for f in sorted(gone.iterdir()):
        f.unlink()
        faults.point("retire:deleting")
    gone.rmdir()
