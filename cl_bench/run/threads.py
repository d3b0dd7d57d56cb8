"""CPU threads of a run: as many as the machine gives this run, not more.

torch's default intra-op pool is one thread per core of the whole machine, and its inter-op pool as
many again, whatever else runs: four runs on two cores then fight over 8+ threads each and steps take
tens of times longer. A run here takes the CPUs available to its process (its affinity mask and its
cgroup's CPU quota) divided by the clbench runs active in the same cache when it starts (each holds a
presence lock under runs/active/ while it runs), and one inter-op thread. Float sums depend on the
intra-op count, so the count a run used is recorded in its result file and is part of its run key: pass
--threads for a count that does not depend on the load (`clbench publish` and `clbench tune` do). Runs started at the
same moment may not see each other yet (each marks itself active as it starts), so a run counts the active runs
again once its stream and base model are ready, and trains (and is keyed) with that count: by then the runs started
with it have marked themselves (bench/threads.py measures four started at once).
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def active_runs(cache: Path) -> int:
    """clbench runs in progress on this cache now: each holds a presence lock under runs/active/ from its start
    (`present`) to its end. Lock files nobody holds (a killed run's) are removed on the way."""
    from filelock import FileLock, Timeout

    held = 0
    for path in sorted((cache / "runs" / "active").glob("*.lock")):
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            held += 1
        else:
            path.unlink(missing_ok=True)
            lock.release()
    return held


def present(held, cache: Path) -> int:
    """Count the runs active on `cache`, then mark this one active for as long as `held` (an ExitStack) is open;
    returns how many others were active."""
    import uuid

    from filelock import FileLock

    others = active_runs(cache)
    folder = cache / "runs" / "active"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    lock = FileLock(str(path))
    lock.acquire()
    held.callback(lambda: (path.unlink(missing_ok=True), lock.release()))
    return others


def choose(requested: int | None, others: int) -> int:
    """The intra-op thread count of a run: `requested`, or the available CPUs shared with the `others` runs active
    on the same cache, at least 1."""
    if requested is not None:
        return requested
    return max(1, available_cpus() // (others + 1))


def crowding(requested: int | None, others: int) -> str | None:
    """A warning line where a given count, with the `others` runs active on the same cache (a thread each at
    least), asks for more threads than the CPUs available; None where it fits or the count is the default (which
    shares). Several runs with a fixed count each on too few CPUs slow far more than their share: their threads
    wait on each other (bench/threads.py measures it)."""
    cpus = available_cpus()
    if requested is None or requested + others <= cpus:
        return None
    beside = f" beside {others} other clbench run{'s' * (others > 1)} on this cache" if others else ""
    fix = ("run them one after another, or leave --threads out to share the CPUs" if others
           else f"give --threads {cpus} or fewer")
    return (f"warning: --threads {requested}{beside} asks for at least {requested + others} threads on {cpus} "
            f"CPU{'s' * (cpus > 1)}, and threads that wait for a CPU slow every step (bench/threads.py measures "
            f"runs side by side); {fix} (another count gives another run key)")


def apply(threads: int) -> None:
    """Set torch's intra-op threads, and one inter-op thread (settable only before torch's first parallel
    work: later calls keep what the process has)."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # torch ran parallel work already in this process; the inter-op pool stays as it is
