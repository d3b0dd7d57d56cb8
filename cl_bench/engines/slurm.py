"""SLURM: each cell of a sweep one job, submitted through submitit (`clbench sweep --engine slurm`).

The driver submits the cells as one job array, waits for the jobs and collects each one's Outcome (a
cell's own error comes back as a failed Outcome, as on the other engines); a job that ends without one
(killed, out of memory, an import error on the node) is listed with the tail of its stderr. A job that
reaches its time limit is requeued, up to --max-retries times, and resumes the cell's last finished
stage. Every job reads and writes the one results and cache directories: both must be on storage that
every node mounts, as must the Python environment the driver runs in (submitit starts the jobs with
the driver's interpreter).

submitit is imported only here and only when the engine is made, so that clbench runs without it.
"""

from __future__ import annotations

import difflib
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from cl_bench.engines.sweep import Outcome, first_line, label, run_cell
from cl_bench.errors import EnvironmentProblem, UsageError

DEFAULT_TIME = "24:00:00"  # a job's time limit unless --slurm time= gives one (submitit's own default is 5 minutes)
CLUSTERS = ("slurm", "local")  # local: the jobs as processes of this machine (a try of the set-up without SLURM)
TAIL_LINES = 10  # of a failed job's stderr, in the sweep's summary
# The cell's resources have options of their own, shared with --engine ray: one way to give each.
RESERVED = {"cpus_per_task": "--cpus-per-cell", "cpus": "--cpus-per-cell", "gpus_per_node": "--gpus-per-cell",
            "gpus": "--gpus-per-cell", "timeout_min": "--slurm time=", "array": "(the sweep makes the array)",
            "map_count": "(the sweep makes the array)"}


def slurm_minutes(text: str) -> int:
    """A SLURM time limit (MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS, DAYS-HOURS:MINUTES or
    DAYS-HOURS:MINUTES:SECONDS) in whole minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UsageError(f"--slurm time={text!r} is not a SLURM time: MINUTES, HH:MM:SS or D-HH:MM:SS "
                         "(e.g. 90, 04:00:00, 1-12:00:00)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = (a * 60 + b) * 60 + c
    else:  # MM or MM:SS
        seconds = a * 60 + (b or 0)
    if seconds <= 0:
        raise UsageError(f"--slurm time={text!r} must be longer than 0")
    return math.ceil(seconds / 60)


def slurm_parameters(pairs: dict[str, str], valid: set[str] | None = None) -> dict:
    """--slurm KEY=VALUE pairs as submitit AutoExecutor parameters: time becomes timeout_min (which the local
    executor obeys too), setup a list of commands split on ';', every other key slurm_KEY (partition, mem,
    account, qos, constraint, gres, array_parallelism, ...: sbatch's options); `valid`: the keys submitit's
    SLURM executor takes (None: unchecked)."""
    out: dict = {"timeout_min": slurm_minutes(DEFAULT_TIME)}
    for key, value in pairs.items():
        k = key.strip().replace("-", "_")
        if k in RESERVED:
            raise UsageError(f"--slurm {key}=: give it as {RESERVED[k]}")
        if k == "time":
            out["timeout_min"] = slurm_minutes(value)
            continue
        if valid is not None and k not in valid:
            near = difflib.get_close_matches(k, sorted(valid), n=3)
            raise UsageError(f"--slurm {key}= is not a SLURM parameter submitit knows"
                             + (f"; did you mean {' or '.join(near)}?" if near else "")
                             + f" (known: time, {', '.join(sorted(valid - set(RESERVED)))})")
        if k == "setup":  # commands run before the job's Python, e.g. "module load cuda;source .venv/bin/activate"
            out["slurm_setup"] = [c.strip() for c in value.split(";") if c.strip()]
        elif value.lower() in ("true", "false"):
            out[f"slurm_{k}"] = value.lower() == "true"
        else:
            out[f"slurm_{k}"] = int(value) if value.isdigit() else value
    return out


class Cell:
    """One cell as a submitit job: run_cell, and, when the job reaches its time limit, requeued by submitit
    (this `checkpoint`) to resume from the cell's last finished stage (never to restart it)."""

    def __call__(self, config, plugins, log_dir, threads, restart) -> Outcome:
        return run_cell(config, plugins, log_dir, threads, restart)

    def checkpoint(self, config, plugins, log_dir, threads, restart):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config, plugins, log_dir, threads, False)


class SlurmEngine:
    """Each cell a SLURM job (`cpus_per_cell` CPUs, the cell's threads, and `gpus_per_cell` GPUs), in one job array,
    through submitit; `folder` holds the jobs' pickles and logs (on shared storage)."""

    name = "slurm"

    def __init__(self, folder: str | Path, cluster: str = "slurm", cpus_per_cell: float = 1, gpus_per_cell: float = 0,
                 parameters: dict[str, str] | None = None, max_retries: int = 2,
                 poll_seconds: float | None = None) -> None:
        try:
            import submitit
        except ImportError:
            raise EnvironmentProblem("--engine slurm needs submitit: pip install 'clbench[slurm]' "
                                     "(or pip install submitit)") from None
        if cluster not in CLUSTERS:
            raise UsageError(f"--slurm-cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
        for name, value, least in (("--cpus-per-cell", cpus_per_cell, 1), ("--gpus-per-cell", gpus_per_cell, 0)):
            if value != int(value) or value < least:
                raise UsageError(f"{name} must be a whole number (at least {least}) for --engine slurm, got {value}")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise EnvironmentProblem("--engine slurm: sbatch is not on PATH; run the sweep on a SLURM login node, or "
                                     "add --slurm-cluster local to run its jobs as processes of this machine")
        valid = getattr(submitit.SlurmExecutor, "_valid_parameters", lambda: None)()
        self.parameters = slurm_parameters(parameters or {}, valid)
        self.folder, self.cluster, self.max_retries = Path(folder), cluster, max_retries
        self.cpus, self.gpus = int(cpus_per_cell), int(gpus_per_cell)
        self.poll = poll_seconds if poll_seconds is not None else (15.0 if cluster == "slurm" else 0.5)

    def executor(self):
        """A submitit executor with the sweep's job parameters."""
        import submitit

        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster, slurm_max_num_timeout=self.max_retries,
                                   local_max_num_timeout=self.max_retries)
        resources = {"cpus_per_task": self.cpus} | ({"gpus_per_node": self.gpus} if self.gpus else {})
        try:
            ex.update_parameters(name="clbench-sweep", **resources, **self.parameters)
        except (NameError, ValueError, TypeError, AssertionError) as e:
            raise UsageError(f"--slurm: {first_line(e)}") from None
        return ex

    def map(self, configs: list, plugins: list, log_dir: str, done: Callable[[Outcome], None],
            restart: bool = False) -> list[Outcome]:
        from submitit.helpers import as_completed

        if not configs:
            return []
        ex = self.executor()
        try:
            with ex.batch():  # one job array: one sbatch call, and --slurm array_parallelism caps the jobs at once
                jobs = [ex.submit(Cell(), c, plugins, log_dir, self.cpus, restart) for c in configs]
        except Exception as e:  # noqa: BLE001 - sbatch refused the jobs: say its first line, not submitit's trace
            raise EnvironmentProblem(f"--engine slurm: the jobs could not be submitted ({type(e).__name__}: "
                                     f"{first_line(e)}); the job files are in {self.folder}") from None
        index = {id(job): i for i, job in enumerate(jobs)}
        out: list[Outcome | None] = [None] * len(configs)
        try:
            for job in as_completed(jobs, poll_frequency=self.poll):
                i = index[id(job)]
                out[i] = job_outcome(job, configs[i])
                done(out[i])
        except BaseException:
            # interrupted (Ctrl-C): the jobs go too; their finished stages stay, and the same command resumes them
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            raise
        return out  # type: ignore[return-value]


def job_outcome(job, config) -> Outcome:
    """The job's Outcome, or a failed one saying how the job ended, with the tail of its stderr."""
    from submitit.core.utils import FailedJobError

    try:
        outcome = job.result()
    except FailedJobError as e:  # the job's Python raised outside run_cell (e.g. a module missing on the node)
        trace = [line for line in str(e).strip().splitlines() if line.strip()]
        return _failed(job, config, f"raised {trace[-1].strip() if trace else 'an error'}")
    except Exception:  # noqa: BLE001 - UncompletedJobError: killed, out of memory, out of time
        state = getattr(job, "state", "UNKNOWN")
        how = "" if state in ("FINISHED", "COMPLETED", "UNKNOWN") else f" (SLURM state {state})"
        return _failed(job, config, f"ended without a result{how}")
    return outcome


def _failed(job, config, what: str) -> Outcome:
    tail = stderr_tail(job.stderr() or "")
    error = f"job {job.job_id} {what}" + (f"; its stderr ends:\n{tail}" if tail else "; it wrote no stderr")
    return Outcome(label(config), "failed", error=error, log=str(job.paths.stderr))


def stderr_tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` non-blank lines of a job's stderr, indented under the sweep's failure line."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    | {line}" for line in kept)
