"""Many runs: `clbench sweep` (a grid), `clbench publish` (the leaderboard's) and `clbench tune` (a validation
search), scheduled by cl_bench.engines."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cl_bench import registry
from cl_bench.cli import options as opt
from cl_bench.cli.report import PUBLISHED, board_of, check_page, device_name, page_option, write_page
from cl_bench.results import TUNING_PAGE
from cl_bench.run.config import SCORINGS

SEEDS = "0,1,2,3,4"  # five: the leaderboard's letter groups and `clbench compare` pair runs by seed
PUBLISHED_THREADS = 2  # the published results' thread count, so that reruns are bit-identical


def engine_options(f):
    """--engine local|ray|slurm, Ray's placement and SLURM's jobs (sweep and publish)."""
    for option in reversed([
        click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray", "slurm"]),
                     help="local: the cells one after another in this process; ray: each cell a Ray task; slurm: "
                          "each cell a SLURM job (through submitit). Ray clusters and SLURM need the results and "
                          "cache directories on storage every node mounts."),
        click.option("--address", "--ray-address", "address", default=None,
                     help="Ray: a cluster's address (auto: the running one) [default: a new local Ray instance]."),
        click.option("--cpus-per-cell", default=1.0, show_default=True, type=click.FloatRange(min=0),
                     help="Ray and SLURM: CPUs each cell reserves (a SLURM job's cpus-per-task, a whole number); "
                          "the cell's CPU threads, unless --threads gives them."),
        click.option("--gpus-per-cell", default=0.0, show_default=True, type=click.FloatRange(min=0),
                     help="Ray and SLURM: GPUs each cell reserves (1 for one GPU per run; whole numbers on SLURM)."),
        click.option("--max-retries", default=2, show_default=True, type=click.IntRange(min=0),
                     help="Times a cell is run again after its worker or node died (Ray) or its job reached the "
                          "time limit (SLURM); it resumes its last finished stage."),
        click.option("--slurm-cluster", default="slurm", show_default=True, type=click.Choice(["slurm", "local"]),
                     help="SLURM: slurm submits with sbatch; local runs the same jobs as processes of this machine "
                          "(a try of the set-up without SLURM)."),
        click.option("--slurm-folder", default=None, type=click.Path(file_okay=False),
                     help="SLURM: where the jobs' files and logs go, on shared storage [default: CACHE_DIR/slurm-jobs]."),
        click.option("--slurm", "slurm_pairs", multiple=True, metavar="KEY=VALUE",
                     help="SLURM: a job parameter (repeatable): time=HH:MM:SS [default: 24:00:00], partition=NAME, "
                          "mem=16G, account=, qos=, constraint=, gres=, array_parallelism=N (jobs at once), "
                          "setup='CMD;CMD' (run before each job), or any other sbatch option submitit knows."),
    ]):
        f = option(f)
    return f


def restart_option(f):
    return click.option("--restart", is_flag=True,
                        help="Start the cells without a complete result over from their first stage, ignoring their "
                             "saved state (complete results are still reused).")(f)


def published_threads(f):
    return opt.threads(default=PUBLISHED_THREADS,
                       default_text=f"{PUBLISHED_THREADS}, the published results' count, so that reruns are "
                                    "bit-identical")(f)


def make_engine(engine, address, cpus, gpus, retries, cache_dir=None, slurm_cluster="slurm", slurm_folder=None,
                slurm_pairs=()):
    from cl_bench.engines.sweep import LocalEngine, RayEngine

    if engine == "local":
        return LocalEngine()
    if engine == "slurm":
        from cl_bench.engines.slurm import SlurmEngine
        from cl_bench.streams.data import default_cache_dir

        folder = slurm_folder or Path(cache_dir or default_cache_dir()) / "slurm-jobs"
        return SlurmEngine(folder, cluster=slurm_cluster, cpus_per_cell=cpus, gpus_per_cell=gpus,
                           parameters=opt.parse_pairs(slurm_pairs, "--slurm", "--slurm partition=gpu"),
                           max_retries=retries)
    return RayEngine(address=address, num_cpus=cpus, num_gpus=gpus, max_retries=retries)


def grid_sets(pairs) -> dict[str, list[str]]:
    """--set KEY=V1,V2,...: the values a strategy option takes in the grid."""
    out = {}
    for key, values in opt.parse_pairs(pairs, "--set", "--set lr=1e-4,3e-4").items():
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise click.BadParameter(f"{key}= has no values; give comma-separated values, e.g. --set lr=1e-4,3e-4",
                                     param_hint="--set")
        out[key] = vals
    return out


def sweep_configs(stream, strategies, seeds, orders, sets, encoders, stream_options, results_dir, cache_dir, steps,
                  batch_size, pretrain_steps, device, eval_limit, model, grid_file=None, threads=None, scoring=None,
                  max_new_tokens=None, base_seeds=None, budgets=None) -> list:
    """The RunConfigs of a sweep's command line and grid file (the command line overrides the file; what
    neither gives is the config fields' default)."""
    from cl_bench.config import Budget, PretrainConfig
    from cl_bench.engines.sweep import Grid, cells, load_grid_file

    doc = load_grid_file(grid_file) if grid_file else {}

    def listed(value, key, default):
        if value is not None:
            return value
        v = doc.get(key, default)
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    def given(value, key):
        return value if value is not None else doc.get(key)

    stream_names = opt.names(listed(stream, "streams", opt.field_default(opt.RunConfig, "stream")),
                             registry.streams.names())
    for n in stream_names:
        opt.check_stream(n)
    names = opt.names(listed(strategies, "strategies", "all"), registry.strategies.names())
    for n in names:
        registry.strategies.entry(n)
    order_list = list(orders) or [str(o) for o in doc.get("orders", ["default"])]
    order_list = [None if o.strip() == "default" else o.strip() for o in order_list]
    options = {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in doc.get("options", {}).items()}
    options.update(sets)
    enc = opt.encoders(encoders) if encoders else {str(k): str(v) for k, v in doc.get("encoders", {}).items()}
    sopts = opt.stream_opts(stream_options) if stream_options else {str(k): str(v) for k, v in
                                                                    doc.get("stream_options", {}).items()}
    budget = {k: int(v) for k, v in (("steps", given(steps, "steps")), ("batch_size", given(batch_size, "batch_size")))
              if v is not None}
    pretrain = {"steps": int(v)} if (v := given(pretrain_steps, "pretrain_steps")) is not None else {}
    run = {k: str(v) for k, v in (("model", given(model, "model")), ("device", given(device, "device")),
                                  ("scoring", scoring)) if v is not None}
    if max_new_tokens is not None:  # command line only, as scoring
        run["max_new_tokens"] = int(max_new_tokens)

    steps_1x = budget.get("steps", opt.field_default(Budget, "steps"))

    def make(base_seed=0, budget_scale=1.0, **cell):
        scaled = {**budget, "steps": max(1, round(steps_1x * budget_scale))} if budget_scale != 1.0 else budget
        return opt.RunConfig(**cell, **run, results_dir=results_dir, cache_dir=cache_dir, budget=Budget(**scaled),
                             pretrain=PretrainConfig(**pretrain, seed=base_seed),
                             eval_limit=given(eval_limit, "eval_limit"),
                             encoders=enc, stream_options=sopts, threads=threads)

    return cells(Grid(tuple(stream_names), tuple(names), opt.seed_list(listed(seeds, "seeds", SEEDS)),
                      tuple(order_list), options, opt.seed_list(listed(base_seeds, "base_seeds", "0")),
                      budget_list(listed(budgets, "budgets", "1"))), make)


def grid_axes(f):
    """--base-seeds and --budgets: the design's levels beyond seeds (sweep and publish)."""
    f = click.option("--budgets", default=None, metavar="X1,X2",
                     help="Multiples of the stage budget's steps, comma-separated (e.g. 0.5,1,2.25: the budget "
                          "curves) [default: 1].")(f)
    return click.option("--base-seeds", default=None,
                        help="Base seeds (the preset's shipped bases 0, 1, 2), comma-separated: a level of the "
                             "design; every cell runs on each [default: 0].")(f)


def budget_list(text: str) -> tuple[float, ...]:
    """--budgets: comma-separated positive multiples of the stage budget's steps (e.g. 0.5,1,2.25)."""
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or not all(x > 0 for x in out):
        raise click.BadParameter(f"{text!r}: give positive multiples of the stage budget, comma-separated, e.g. "
                                 "--budgets 0.5,1,2.25", param_hint="--budgets")
    return out


def run_sweep(configs, engine, cache_dir, quiet: bool = False, restart: bool = False) -> list:
    """Sweep `configs`; the failed outcomes (listed on stderr)."""
    from cl_bench.engines.sweep import sweep as sweep_cells
    from cl_bench.streams.data import default_cache_dir

    logs = str(Path(cache_dir or default_cache_dir()) / "sweep-logs")
    outcomes = sweep_cells(configs, engine, log_dir=logs, progress=not quiet and sys.stderr.isatty(),
                           echo=lambda line: click.echo(line, err=True), restart=restart)
    return [o for o in outcomes if o.status == "failed"]


@click.command()
@click.option("--grid", "grid_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A YAML grid: streams, strategies, seeds, base_seeds, budgets, orders, options (name: [values]), "
                   "steps, batch_size, pretrain_steps, eval_limit, encoders, stream_options, model, device; the "
                   "command line overrides it.")
@opt.stream(optional=True, help="Streams, comma-separated, or all")
@click.option("--strategies", default=None, help="Strategies, comma-separated, or all [default: all].")
@click.option("--seeds", default=None, help=f"Seeds, comma-separated [default: {SEEDS}].")
@click.option("--order", "orders", multiple=True, metavar="default|TASKS|random:SEED",
              help="An order of each stream's new tasks (repeatable) [default: the stream's own].")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
              help="Values of a strategy option to sweep, e.g. --set lr=1e-4,3e-4 (repeatable; every combination, "
                   "for the strategies that have the option; the others run at their defaults).")
@grid_axes
@opt.model(optional=True, help="Base model: a preset or a local checkpoint")
@opt.steps(optional=True)
@opt.batch_size(optional=True)
@opt.pretrain_steps(optional=True)
@opt.eval_limit(optional=True)
@opt.encoder
@opt.stream_option
@opt.results_dir(help="Where every cell's result file goes")
@opt.cache_dir(help="Cache of data, base models, resumable runs and the cells' logs (shared by every worker)")
@opt.device(optional=True, help="Device of each run: auto, cpu, cuda or cuda:N")
@engine_options
@opt.threads()
@opt.field_option(opt.RunConfig, "scoring", type=click.Choice(SCORINGS), optional=True)
@opt.field_option(opt.RunConfig, "max_new_tokens", type=click.IntRange(min=1, max=4096), metavar="N", optional=True)
@restart_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def sweep(grid_file, stream, strategies, seeds, orders, sets, base_seeds, budgets, model, steps, batch_size,
          pretrain_steps, eval_limit, encoders, stream_options, results_dir, cache_dir, device, engine, address,
          cpus_per_cell, gpus_per_cell, max_retries, slurm_cluster, slurm_folder, slurm_pairs, threads, scoring,
          max_new_tokens, restart, quiet) -> None:
    """Run a grid of runs, each cell a task: locally one after another, on Ray (--engine ray) or as SLURM jobs
    (--engine slurm).

    Cells whose complete result exists are skipped and a cell killed mid-run resumes from its last
    finished stage, so the same command can be run again at any time; a failed cell is listed at
    the end with its log and the others go on (exit status 1 if any failed).
    """
    configs = sweep_configs(stream, strategies, seeds, orders, grid_sets(sets), encoders, stream_options, results_dir,
                            cache_dir, steps, batch_size, pretrain_steps, device, eval_limit, model, grid_file,
                            threads=threads, scoring=scoring, max_new_tokens=max_new_tokens, base_seeds=base_seeds,
                            budgets=budgets)
    engine = make_engine(engine, address, cpus_per_cell, gpus_per_cell, max_retries, cache_dir, slurm_cluster,
                         slurm_folder, slurm_pairs)
    failed = run_sweep(configs, engine, cache_dir, quiet, restart)
    if failed:
        raise SystemExit(1)


@click.command()
@opt.stream(help="Task stream to run, or several, comma-separated (all: every registered stream)")
@click.option("--strategies", default="all", show_default=True,
              help="Comma-separated strategy names, or all (every registered strategy).")
@click.option("--seeds", default=SEEDS, show_default=True,
              help="Comma-separated seeds (five by default: the leaderboard's letter groups and `clbench compare` pair "
                   "runs by seed).")
@click.option("--order", "orders", multiple=True, metavar="default|TASKS|random:SEED",
              help="An order of each stream's new tasks to run (repeatable: every strategy runs in every order "
                   "given, and the leaderboard reports the order effects) [default: the stream's own].")
@grid_axes
@click.option("--models", default=None, metavar="M1,M2",
              help="Base models, comma-separated (presets such as mixtral-tiny,mixtral-small,mixtral-medium: the "
                   "scale axis, whose rank agreement the leaderboard reports); every cell runs on each "
                   "[default: the default preset].")
@opt.encoder
@opt.stream_option
@opt.results_dir(default=PUBLISHED, help="Directory holding runs/ of result files")
@opt.cache_dir()
@opt.steps(help="Training steps per stage (the published leaderboard uses the default)")
@opt.pretrain_steps(help="Pre-training steps of the base model (the published leaderboard uses the default)")
@opt.device(help="Device of the runs and the metrics: auto (the GPU where there is one), cpu, cuda")
@opt.eval_limit()
@page_option
@engine_options
@published_threads
@restart_option
def publish(stream, strategies, seeds, orders, base_seeds, budgets, models, encoders, stream_options, results_dir,
            cache_dir, steps, pretrain_steps, device, eval_limit, pages, engine, address, cpus_per_cell, gpus_per_cell,
            max_retries, slurm_cluster, slurm_folder, slurm_pairs, threads, restart) -> None:
    """Run every stream x order x strategy x seed still missing (default settings), then write the
    leaderboard and figures: a sweep (`clbench sweep`) plus the leaderboard.

    Finished runs are reused, an interrupted one resumes, so the command can be run again
    at any time. Writes RESULTS_DIR/leaderboard.{md,csv,tex,html} and RESULTS_DIR/figures/,
    covering every stream with result files under RESULTS_DIR; if a run fails, the others go on,
    the failures are listed and nothing is written.
    """
    from cl_bench import errors
    from cl_bench.reporting.figures import draw
    from cl_bench.reporting.leaderboard import render
    from cl_bench.results import atomic_write_text

    check_page(pages)
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else [None]
    if not model_list:
        raise errors.UsageError(f"--models {models!r}: give one or more base models, e.g. mixtral-tiny,mixtral-small")
    configs = [c for m in model_list
               for c in sweep_configs(stream, strategies, seeds, orders, {}, encoders, stream_options, results_dir,
                                      cache_dir, steps, None, pretrain_steps, device, eval_limit, m, threads=threads,
                                      base_seeds=base_seeds, budgets=budgets)]
    engine = make_engine(engine, address, cpus_per_cell, gpus_per_cell, max_retries, cache_dir, slurm_cluster,
                         slurm_folder, slurm_pairs)
    if run_sweep(configs, engine, cache_dir, quiet=True, restart=restart):
        raise errors.RunFailed("some runs failed (listed above); the leaderboard was not written")
    board = board_of(results_dir, None, "acc", device)
    figures = draw(board, Path(results_dir) / "figures", device_name(device))
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("html", "html")):
        atomic_write_text(Path(results_dir) / f"leaderboard.{ext}", render(board, fmt, figures))
    write_page(pages, board)
    click.echo(f"wrote {results_dir}/leaderboard.{{md,csv,tex,html}} and {results_dir}/figures/")


@click.command()
@opt.stream(help="Task stream to tune on")
@click.option("--strategies", default="all", show_default=True,
              help="Comma-separated strategy names, or all (every registered strategy with a tuning grid).")
@click.option("--seeds", default="0,1", show_default=True, help="Comma-separated tuning seeds.")
@opt.results_dir(default=f"{PUBLISHED}/tuning",
                 help="Where the tuning runs' result files go (apart from the leaderboard's)")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help=f"Report path without suffix; .json and .md are written [default: {PUBLISHED}/hparams/STREAM].")
@opt.cache_dir()
@opt.steps()
@opt.pretrain_steps(help="Pre-training steps of the base model")
@opt.device(help="Device of the runs: auto, cpu or cuda")
@opt.eval_limit(help="Score only the first N items of each validation split (tests)")
@click.option("--page", "--readme", "page", type=click.Path(dir_okay=False, exists=True), default=None,
              help=f"Also write the summary table (grid, choice, runner-up) into this page between its hparams "
                   f"markers (the published one is in {TUNING_PAGE}; --readme is this option's former name).")
@click.option("--grids", "grids_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A YAML file of grids to try instead of the strategies' declared ones: strategy: {option: "
                   "[values]} (in tuning order), and optionally score: final|own per strategy (a retuning with "
                   "wider grids; the strategies declare the grids of the committed report).")
@published_threads
def tune(stream, strategies, seeds, results_dir, out, cache_dir, steps, pretrain_steps, device, eval_limit,
         page, grids_file, threads) -> None:
    """Choose each strategy's hyperparameters on validation data only, from its declared grid.

    Every grid point runs the stream for each seed with every evaluation on the validation
    splits (no test item is scored); the highest mean final validation ACC wins. Finished runs
    are reused. Writes the grid, every score and the choice to OUT.json and OUT.md.
    """
    import shlex

    from cl_bench import __version__
    from cl_bench.config import Budget, PretrainConfig
    from cl_bench.engines import tune as tuning
    from cl_bench.run.runner import run as run_stream

    grids = tuning.load_grids(grids_file) if grids_file else {}
    if strategies == "all":
        names = [n for n in registry.strategies.names()
                 if getattr(registry.strategies.get(n), "tuning", None) or n in grids]
    else:
        names = [s.strip() for s in strategies.split(",")]
    for n in names:
        registry.strategies.entry(n)
    seed_list = opt.seed_list(seeds)
    path = Path(out) if out else Path(PUBLISHED) / "hparams" / stream
    tuning.check_output(path)  # before the grid runs, not after
    if page:  # likewise
        from cl_bench.results import check_markers

        check_markers(page, tuning.README_BEGIN, tuning.README_END, "tuning table", home=TUNING_PAGE)
    report = {"stream": stream, "seeds": list(seed_list), "clbench": __version__,
              "command": "clbench tune " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["tune"] else "clbench tune",
              "budget": {"steps": steps, "pretrain_steps": pretrain_steps, "eval_limit": eval_limit},
              **({"grids_file": str(grids_file)} if grids_file else {}),
              "strategies": {}}
    all_docs = []
    for n in names:
        def run_one(point, seed, n=n):
            click.echo(f"{n} {tuning.point_label(point)} seed {seed}", err=True)
            doc, _ = run_stream(opt.RunConfig(stream=stream, strategy=n, seed=seed, device=device,
                                              results_dir=results_dir, cache_dir=cache_dir, budget=Budget(steps=steps),
                                              pretrain=PretrainConfig(steps=pretrain_steps), eval_split="val",
                                              eval_limit=eval_limit, strategy_options=dict(point), threads=threads),
                                progress=False, reuse=True, wait=True, echo=lambda s: click.echo(s, err=True))
            all_docs.append(doc)
            return doc

        override = grids.get(n, {})
        report["strategies"][n] = tuning.tune_strategy(n, run_one, seed_list, grid=override.get("grid"),
                                                       rule=override.get("score"))
        r = report["strategies"][n]
        click.echo(f"{n}: chosen {tuning.point_label(r['chosen'])}"
                   + ("" if r["defaults_match"] else f" (defaults now: {tuning.point_label(r['defaults_now'])})"))
    report["provenance"] = tuning.provenance(all_docs)
    tuning.write_report(report, path)
    if page:
        from cl_bench.results import atomic_write_text

        text = Path(page).read_text(encoding="utf-8")
        atomic_write_text(Path(page), tuning.splice_readme(text, tuning.summary_markdown(report), path=page))
    click.echo(f"wrote {path.with_suffix('.json')} and {path.with_suffix('.md')}")


COMMANDS = [sweep, publish, tune]
