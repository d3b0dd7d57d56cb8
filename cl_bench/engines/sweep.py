"""Sweeps: a grid of runs (streams x orders x strategies x option values x seeds), each cell one task.

`clbench sweep` and `clbench publish` run a grid through an engine: `local` runs the cells one
after another in this process; `ray` hands each cell to Ray (`ray.init(address=...)`: a local
instance by default, or a cluster), with the CPUs and GPUs each cell asks for; `slurm`
(cl_bench.engines.slurm) submits each cell as a SLURM job through submitit. A cell whose
complete result exists is skipped (runner.run's `reuse`), a cell killed mid-run resumes from its
last finished stage (the runner's saved state, in the shared cache directory), a failed cell is
listed at the end with its log and the others go on. Every cell writes into the one results
directory.

Ray is used rather than a scheduler of our own: it places tasks on the machines of a cluster
and ships the task's arguments; a cell is a plain function of its RunConfig, so the cells of a
grid are independent and any engine can run them. A cell is counted once however often it runs:
its result file is written atomically under its run key, with the key's lock held, so a retry
after a lost worker either resumes the cell or finds its complete result.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cl_bench.errors import EnvironmentProblem, UsageError


@dataclass(frozen=True)
class Grid:
    """What a sweep runs. `options`: strategy option -> values; a strategy gets every combination of the
    options it has (the others run at their defaults)."""

    streams: tuple[str, ...] = ("vision-audio",)
    strategies: tuple[str, ...] = ("full-ft",)
    seeds: tuple[int, ...] = (0,)
    orders: tuple[str | None, ...] = (None,)
    options: dict = field(default_factory=dict)
    base_seeds: tuple[int, ...] = (0,)  # the preset's base models (--base-seed): a level of the design
    budgets: tuple[float, ...] = (1.0,)  # multiples of the stage budget's steps: the budget curves


@dataclass
class Outcome:
    label: str
    status: str  # "done", "reused" or "failed"
    path: str | None = None
    error: str | None = None
    log: str | None = None
    seconds: float = 0.0
    retries: tuple[str, ...] = ()  # why each earlier attempt was lost (an engine's retries, e.g. NodeDiedError)
    warnings: tuple[str, ...] = ()  # the run's "warning: ..." lines (e.g. more threads than CPUs), shown as it ends


def load_grid_file(path: str) -> dict:
    """A YAML grid: streams, strategies, seeds, orders, options (name: [values]) and run settings (steps,
    batch_size, pretrain_steps, eval_limit, encoders, stream_options, model, device)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"grid file {path}: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"grid file {path}: a mapping of streams, strategies, seeds, ... is expected")
    known = {"streams", "strategies", "seeds", "base_seeds", "budgets", "orders", "options", "steps", "batch_size",
             "pretrain_steps", "eval_limit", "encoders", "stream_options", "model", "device"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise UsageError(f"grid file {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, problem in _grid_problems(doc):
        raise UsageError(f"grid file {path}: {key}: {problem}")
    return doc


def _scalar_or_list(value, kind, what: str) -> str | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        return f"must be {what} or a list of them, got {value!r}"
    return None


def _grid_problems(doc: dict):
    """(key, what is wrong) for each value of a grid file of the wrong type or range."""
    for key in ("streams", "strategies", "orders"):
        if key in doc and (problem := _scalar_or_list(doc[key], str, "a name")):
            yield key, problem
    for key in ("seeds", "base_seeds"):
        if key not in doc:
            continue
        seeds = doc[key] if isinstance(doc[key], list) else [doc[key]]
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 2**31 - 1]
        if bad or not seeds:
            yield key, (f"must be integers from 0 to {2**31 - 1} (a list, e.g. [0, 1, 2]), got "
                        f"{bad[0] if bad else doc[key]!r}")
    if "budgets" in doc:
        scales = doc["budgets"] if isinstance(doc["budgets"], list) else [doc["budgets"]]
        bad = [b for b in scales if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0]
        if bad or not scales:
            yield "budgets", (f"must be positive multiples of the stage budget (a list, e.g. [0.5, 1, 2.25]), got "
                              f"{bad[0] if bad else doc['budgets']!r}")
    for key in ("steps", "batch_size", "pretrain_steps", "eval_limit"):
        v = doc.get(key)
        if key in doc and not (v is None and key == "eval_limit") and (
                isinstance(v, bool) or not isinstance(v, int) or v < 1):
            yield key, f"must be a positive integer, got {v!r}"
    for key in ("options", "encoders", "stream_options"):
        if key in doc and not isinstance(doc[key], dict):
            yield key, f"must be a mapping (name: value), got {doc[key]!r}"
    for key in ("model", "device"):
        if key in doc and not isinstance(doc[key], str):
            yield key, f"must be a string, got {doc[key]!r}"


def cells(grid: Grid, make: Callable[..., object]) -> list:
    """The RunConfigs of `grid`; `make(stream=, strategy=, seed=, order=, strategy_options=, base_seed=,
    budget_scale=)` builds one."""
    from cl_bench import registry

    option_owners = {name: [] for name in grid.options}
    out = []
    for stream, order, strategy in itertools.product(grid.streams, grid.orders, grid.strategies):
        cls = registry.strategies.get(strategy)
        names = [f.name for f in dataclasses.fields(cls.Config)]
        fields = {n.replace("_", "-") for n in names} | set(names)
        mine = {k: v for k, v in grid.options.items() if k in fields}
        for k in mine:
            option_owners[k].append(strategy)
        for values in itertools.product(*mine.values()):
            options = dict(zip(mine, map(str, values)))
            for scale, base_seed, seed in itertools.product(grid.budgets, grid.base_seeds, grid.seeds):
                out.append(make(stream=stream, strategy=strategy, seed=seed, order=order, strategy_options=options,
                                base_seed=base_seed, budget_scale=scale))
    unused = [k for k, owners in option_owners.items() if not owners]
    if unused:
        raise UsageError(f"option(s) {', '.join(unused)} belong to none of the strategies "
                         f"{', '.join(grid.strategies)}; `clbench ls -v` lists each strategy's options")
    return out


def label(config) -> str:
    from cl_bench.config import Budget, PretrainConfig

    opts = "".join(f" {k}={v}" for k, v in sorted(config.strategy_options.items()))
    order = "" if config.order is None else f" order {config.order}"
    budget, pretrain = getattr(config, "budget", Budget()), getattr(config, "pretrain", PretrainConfig())
    steps = "" if budget.steps == Budget().steps else f" steps {budget.steps}"
    base = "" if pretrain.seed == PretrainConfig().seed else f" base {pretrain.seed}"
    return f"{config.stream}{order}: {config.strategy}{opts}{steps}{base} seed {config.seed}"


def registrations() -> list[tuple[str, str, str, str]]:
    """Plug-ins registered at run time in this process (registry.register), to register in every worker."""
    from cl_bench import registry

    out = []
    for kind, reg in (("strategies", registry.strategies), ("streams", registry.streams),
                      ("modalities", registry.modalities)):
        for name, entry in getattr(reg, "_extra", {}).items():
            out.append((kind, name, entry.target, entry.origin))
    return out


def run_cell(config, plugins: list | None = None, log_dir: str | None = None, threads: int | None = None,
             restart: bool = False) -> Outcome:
    """Run one cell (reusing a complete result, resuming a saved state); never raises for the cell's own errors:
    they come back as a failed Outcome with the log's path. `threads`: the cell's CPU threads where its config
    does not give a count (a Ray cell uses the CPUs it reserved; the count is part of a CPU run's key)."""
    from cl_bench import registry
    from cl_bench.run.runner import run

    if threads and config.threads is None:  # the CPUs the cell reserved (Ray), unless the grid gives a count
        config = dataclasses.replace(config, threads=threads)
    for kind, name, target, origin in plugins or []:
        reg = getattr(registry, kind)
        if name not in getattr(reg, "_extra", {}):
            reg.register(name, target, origin=origin)
    lines: list[str] = []
    t0 = time.perf_counter()
    log = None
    if log_dir:
        from cl_bench.streams.data import stable_hash

        log = str(Path(log_dir) / f"{config.stream}-{config.strategy}-seed{config.seed}-"
                                  f"{stable_hash(dataclasses.asdict(config))[:8]}.log")
    try:
        _, path = run(config, progress=False, reuse=True, wait=True, echo=lines.append, restart=restart)
        reused = any(line.endswith("finished before, reused") for line in lines)
        status, error = ("reused" if reused else "done"), None
    except Exception as e:  # noqa: BLE001 - a cell's failure is reported, the sweep goes on
        path, status = None, "failed"
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        lines.append(traceback.format_exc())
    if log and (status == "failed" or lines):
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text("\n".join(lines) + "\n")
    return Outcome(label(config), status, None if path is None else str(path), error, log,
                   round(time.perf_counter() - t0, 3), warnings=tuple(w for w in lines if w.startswith("warning:")))


class LocalEngine:
    """The cells one after another in this process."""

    name = "local"

    def map(self, configs: list, plugins: list, log_dir: str, done: Callable[[Outcome], None],
            restart: bool = False) -> list[Outcome]:
        out = []
        for c in configs:
            out.append(run_cell(c, plugins, log_dir, restart=restart))
            done(out[-1])
        return out


class RayEngine:
    """Each cell a Ray task (`num_cpus` / `num_gpus` each); a cell whose worker process or node died is run
    again, up to `max_retries` times, resuming from its last finished stage."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 2, init_kwargs: dict | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise EnvironmentProblem("--engine ray needs Ray: pip install 'clbench[ray]' (or pip install ray)") \
                from None
        self.address, self.num_cpus, self.num_gpus, self.max_retries = address, num_cpus, num_gpus, max_retries
        self.init_kwargs = init_kwargs or {}

    def map(self, configs: list, plugins: list, log_dir: str, done: Callable[[Outcome], None],
            restart: bool = False) -> list[Outcome]:
        import ray

        started = not ray.is_initialized()
        if started:
            check_reachable(self.address)
            try:
                # "local": a new instance of our own, never a cluster that happens to run on this machine
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                         **self.init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise EnvironmentProblem(f"--address {self.address}: Ray could not connect ({first_line(e)}); start "
                                         "a cluster (ray start --head) or drop --address for a local Ray instance") \
                    from None
        try:
            return self._run(ray, configs, plugins, log_dir, done, restart)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, configs, plugins, log_dir, done, restart) -> list[Outcome]:
        # Ray's own task retries would rerun a lost cell too, but silently; retried here, the summary can say which
        # cells ran again and why. A retry never restarts: it resumes what the lost attempt saved.
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(run_cell)
        threads = max(1, int(self.num_cpus))
        lost = lost_errors(ray)
        pending = {task.remote(c, plugins, log_dir, threads, restart): i for i, c in enumerate(configs)}
        retries: dict[int, list[str]] = {}
        out: list[Outcome | None] = [None] * len(configs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                o = ray.get(ready[0])
            except lost as e:
                if len(retries.get(i, [])) < self.max_retries:
                    retries.setdefault(i, []).append(type(e).__name__)
                    pending[task.remote(configs[i], plugins, log_dir, threads, False)] = i
                    continue
                n = len(retries.get(i, [])) + 1
                o = Outcome(label(configs[i]), "failed", error=f"{type(e).__name__}: {first_line(e)} "
                            f"({n} attempt{'s' * (n > 1)}; --max-retries runs it more often)")
            except Exception as e:  # noqa: BLE001 - e.g. the task's arguments could not be unpickled on the node
                o = Outcome(label(configs[i]), "failed", error=f"{type(e).__name__}: {first_line(e)}")
            if i in retries:
                # a lost attempt that wrote the complete result before it died: this sweep ran the cell, once
                o = dataclasses.replace(o, retries=tuple(retries[i]),
                                        status="done" if o.status == "reused" else o.status)
            out[i] = o
            done(o)
        return out  # type: ignore[return-value]


def lost_errors(ray) -> tuple[type[BaseException], ...]:
    """The errors of a Ray task whose worker process or node died (or whose result went with the node)."""
    names = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address (host:port, or ray://host:port) must answer within `timeout` seconds: Ray itself retries
    an unreachable one for minutes. None (a local instance) and auto (the running one) are Ray's to find."""
    import socket

    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EnvironmentProblem(f"--address {address}: nothing answers there ({e.strerror or e}); start the "
                                 "cluster's head (ray start --head) or check the address") from None


def check_cells(configs: list) -> None:
    """Every cell's strategy options, stream options and order, checked once before any cell runs (a bad value
    would otherwise fail in every cell, one after another)."""
    from cl_bench import registry
    from cl_bench.config import from_options
    from cl_bench.streams import resolve
    from cl_bench.streams.base import order_of

    seen = set()
    for c in configs:
        options = (c.strategy, tuple(sorted(c.strategy_options.items())))
        if options not in seen:
            seen.add(options)
            cls = registry.strategies.get(c.strategy)
            from_options(cls.Config, dict(c.strategy_options), f"strategy {c.strategy!r}")
        stream = (c.stream, tuple(sorted(c.stream_options.items())), c.order)
        if stream not in seen:
            seen.add(stream)
            made = resolve.make(c.stream, c.stream_options)
            if c.order:
                order_of(c.order, list(type(made).tasks), c.stream)


def sweep(configs: Iterable, engine=None, log_dir: str | None = None, progress: bool = True,
          echo: Callable[[str], None] = print, restart: bool = False) -> list[Outcome]:
    """Run every cell through `engine` (local by default); a progress bar over cells; the outcomes in order.
    `restart`: cells without a complete result start over, ignoring a saved state (complete ones are reused)."""
    from tqdm.auto import tqdm

    configs = list(configs)
    check_cells(configs)
    engine = engine or LocalEngine()
    bar = tqdm(total=len(configs), desc=f"sweep ({engine.name})", unit="cell", disable=not progress)

    def done(o: Outcome) -> None:
        bar.update(1)
        for w in o.warnings:
            (bar.write if progress else echo)(f"{o.label}: {w}")
        if o.status == "failed":
            bar.write(f"failed: {o.label}: {o.error}")
        elif not progress:
            echo(f"{o.label}: {o.status} ({o.seconds:.1f} s)")

    try:
        outcomes = engine.map(configs, registrations(), log_dir, done, restart=restart)
    finally:
        bar.close()
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "reused", "failed")}
    echo(f"sweep: {len(outcomes)} cells, {counts['done']} run, {counts['reused']} reused, {counts['failed']} failed")
    for o in outcomes:
        if o.retries:
            echo(f"  retried: {o.label}: {len(o.retries)} time{'s' * (len(o.retries) > 1)}, after "
                 f"{', '.join(o.retries)}")
    for o in failed:
        first, *more = (o.error or "").split("\n")  # more: e.g. the tail of a SLURM job's stderr
        echo(f"  failed: {o.label}: {first}" + (f" (log: {o.log})" if o.log else ""))
        for line in more:
            echo(line)
    if failed:
        echo("the same command runs the failed cells again (finished stages resume); add --restart to start them "
             "over from their first stage (complete cells are still reused)")
    return outcomes
