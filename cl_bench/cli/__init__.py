"""The `clbench` command line. Imports torch only in the commands that need it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cl_bench import __version__, registry

MAX_SEED = 2**31 - 1  # numpy's and torch's generators all take it
USER_RESULTS = "my-results"  # `clbench run`'s default: a user's runs, apart from the published results/


def _parse_options(pairs: tuple[str, ...], hint: str = "-o/--option", example: str = "-o lr=1e-4") -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. {example})", param_hint=hint)
        key = key.strip()
        if key.replace("-", "_") in {k.replace("-", "_") for k in out}:
            raise click.BadParameter(f"{key!r} is given twice; give it once", param_hint=hint)
        out[key] = value.strip()
    return out


def _stream_option_flag(f):
    """-s/--stream-option."""
    return click.option("-s", "--stream-option", "stream_options", multiple=True, metavar="KEY=VALUE",
                        help="A stream option, e.g. -s train-speakers=40 (repeatable; `clbench ls -v` lists them).")(f)


def _stream_options(f):
    """--stream-option and --order: a stream's own options and the order of its new tasks."""
    f = click.option("--order", default=None, metavar="TASKS|random:SEED",
                     help="Order of the stream's new tasks: their names (e.g. --order audio,vision) or random:SEED "
                          "(a seeded shuffle) [default: the stream's own]. Recorded in the result file and run key.")(f)
    return _stream_option_flag(f)


_encoder_option = click.option(
    "--encoder", "encoders", multiple=True, metavar="MODALITY=NAME",
    help="Encoder of a modality, e.g. --encoder image=patches (`clbench ls -v` lists each modality's), "
         "MODALITY=module:Class for an Encoder subclass of your own, or image=DIR / audio=DIR for a pretrained "
         "CLIP, SigLIP, Whisper or wav2vec2 model saved there (repeatable).")


_encoder_options_option = click.option(
    "--encoder-option", "encoder_options", multiple=True, metavar="MODALITY.KEY=VALUE",
    help="An option of an encoder loaded from a directory: image.layer=-2, image.tokens=144 (the patch grid "
         "average-pooled to 12 x 12), audio.layer=-1, audio.tokens=N (repeatable).")


def _encoder_opts(pairs) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in _parse_options(pairs, "--encoder-option", "--encoder-option image.tokens=144").items():
        modality, dot, name = key.partition(".")
        if not dot or not modality or not name:
            raise click.BadParameter(f"{key}={value}: write MODALITY.KEY=VALUE, e.g. image.tokens=144",
                                     param_hint="--encoder-option")
        out.setdefault(modality, {})[name] = value
    return out


def _engine_options(f):
    """--engine local|ray and Ray's placement (sweep and publish)."""
    for opt in reversed([
        click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
                     help="local: the cells one after another in this process; ray: each cell a Ray task."),
        click.option("--address", default=None,
                     help="Ray: a cluster's address (auto: the running one) [default: a local Ray instance]."),
        click.option("--cpus-per-cell", default=1.0, show_default=True, type=click.FloatRange(min=0),
                     help="Ray: CPUs each cell reserves."),
        click.option("--gpus-per-cell", default=0.0, show_default=True, type=click.FloatRange(min=0),
                     help="Ray: GPUs each cell reserves (1 for one GPU per run)."),
        click.option("--max-retries", default=2, show_default=True, type=click.IntRange(min=0),
                     help="Ray: times a cell whose worker died is run again (it resumes its last finished stage)."),
    ]):
        f = opt(f)
    return f


def _engine(engine, address, cpus, gpus, retries):
    from cl_bench.engines.sweep import LocalEngine, RayEngine

    if engine == "local":
        return LocalEngine()
    return RayEngine(address=address, num_cpus=cpus, num_gpus=gpus, max_retries=retries)


def _grid_sets(pairs) -> dict[str, list[str]]:
    """--set KEY=V1,V2,...: the values a strategy option takes in the grid."""
    out = {}
    for key, values in _parse_options(pairs, "--set", "--set lr=1e-4,3e-4").items():
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise click.BadParameter(f"{key}= has no values; give comma-separated values, e.g. --set lr=1e-4,3e-4",
                                     param_hint="--set")
        out[key] = vals
    return out


def _encoders(pairs) -> dict[str, str]:
    from cl_bench.streams.modality import check_mapping

    out = _parse_options(pairs, "--encoder", "--encoder image=patches")
    check_mapping(out)
    return out


def _stream_class(name: str):
    from cl_bench.streams.resolve import stream_class

    return stream_class(name)


def _seed_list(text: str) -> tuple[int, ...]:
    """--seeds: comma-separated integers in [0, MAX_SEED]."""
    out = []
    for x in (x.strip() for x in text.split(",")):
        if not x:
            continue
        if not x.isdigit() or int(x) > MAX_SEED:
            raise click.BadParameter(f"{x!r} is not a seed: give comma-separated integers from 0 to {MAX_SEED}, "
                                     "e.g. --seeds 0,1,2", param_hint="--seeds")
        out.append(int(x))
    if not out:
        raise click.BadParameter("no seed given, e.g. --seeds 0,1,2", param_hint="--seeds")
    return tuple(out)


def _check_device(ctx, param, value: str) -> str:
    """--device: one of the forms clbench runs on, a usage error otherwise (torch's own is a traceback)."""
    from cl_bench.config import device_problem

    if device_problem(value):
        raise click.BadParameter(device_problem(value))
    return value


def _threads_option(default: int | None):
    """--threads: torch's CPU threads of each run (recorded, and part of a CPU run's key)."""
    auto = ("[default: the CPUs available, shared among the clbench runs active in the cache]" if default is None
            else f"[default: {default}, the published results' count, so that reruns are bit-identical]")
    return click.option("--threads", default=default, type=click.IntRange(min=1, max=1024), metavar="N",
                        help="CPU threads of each run; float sums differ across counts, so the count is recorded "
                             f"and is part of a CPU run's key {auto}.")


def _stream_opts(pairs) -> dict[str, str]:
    return _parse_options(pairs, "-s/--stream-option", "-s train-speakers=40")


class _Main(click.Group):
    """The command group: an error of the environment (a directory that cannot be written, a full disk, a
    file that cannot be read) ends in one line naming the path and what to do, not a traceback, unless
    --debug (or CLBENCH_DEBUG=1) asks for the traceback."""

    def invoke(self, ctx):
        import errno
        import os

        try:
            return super().invoke(ctx)
        except OSError as e:
            if (ctx.obj or {}).get("debug") or os.environ.get("CLBENCH_DEBUG") == "1":
                raise
            where = f"{e.filename}: " if e.filename else ""
            fix = {errno.EACCES: "make it writable (or readable), or choose another directory",
                   errno.EPERM: "make it writable (or readable), or choose another directory",
                   errno.EROFS: "choose a directory on a writable file system",
                   errno.ENOSPC: "free some disk space, or choose a directory on another disk",
                   errno.EDQUOT: "free some disk space, or choose a directory on another disk",
                   errno.ENOENT: "check the path"}.get(e.errno, "check the path and the disk; --debug shows where")
            raise click.ClickException(f"{where}{e.strerror or e}; {fix}") from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clbench")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its one-line message.")
@click.pass_context
def main(ctx, debug) -> None:
    """clbench: grow a language model into new modalities, and measure what it forgets.

    \b
    Typical use:
      clbench ls                                          # strategies and streams
      clbench run --stream vision-audio --strategy full-ft
      clbench run --strategy align-only --seed 1 --steps 200
    """
    ctx.obj = {"debug": debug}


@main.command()
@click.option("--stream", default="vision-audio", show_default=True, help="Task stream to run (see `clbench ls`).")
@click.option("--strategy", default="full-ft", show_default=True, help="Strategy to run (see `clbench ls`).")
@click.option("--model", default="mixtral-tiny", show_default=True,
              help="Base model: a preset (mixtral-tiny, olmoe-tiny, qwen2-moe-tiny, qwen3-moe-tiny, granite-moe-tiny) "
                   "or a local Hugging Face MoE checkpoint directory of one of those families.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0, max=MAX_SEED), help="Seed of the run.")
@click.option("--device", default="auto", show_default=True, callback=_check_device,
              help="auto (the GPU where there is one), cpu, cuda or cuda:N.")
@click.option("--steps", default=400, show_default=True, type=click.IntRange(min=1),
              help="Training steps per stage.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Training examples per step.")
@click.option("--pretrain-steps", default=400, show_default=True, type=click.IntRange(min=1),
              help="Pre-training steps of a preset base model (done once, then cached).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A strategy option, e.g. -o lr=1e-4 (repeatable; `clbench ls -v` lists them).")
@_encoder_option
@_stream_options
@click.option("--results-dir", default=USER_RESULTS, show_default=True, type=click.Path(file_okay=False),
              help="Directory the result file is written under (runs/<stream>/<strategy>/); your own, apart from "
                   "the published results/ (`clbench publish` writes there).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data, base models and resumable runs [default: $CLBENCH_CACHE or ~/.cache/clbench].")
@click.option("--restart", is_flag=True, help="Ignore the saved state of an interrupted run and start over.")
@click.option("--eval-limit", default=None, type=click.IntRange(min=1), metavar="N",
              help="Evaluate only the first N items of each test split (a quick look; such runs get their own "
                   "key and leaderboard row) [default: every item].")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Precision on a GPU: bfloat16/float16 store the frozen weights in it and run every forward under "
                   "autocast (trainable parameters and optimizer states stay float32); the CPU runs float32.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute each decoder layer's activations in the backward pass: less memory, more time.")
@_encoder_options_option
@click.option("--prompt-format", default="plain", show_default=True, type=click.Choice(["plain", "chat"]),
              help="chat: each prompt is the user's turn of the tokenizer's chat template and the answer the "
                   "assistant's reply (for instruction-tuned checkpoints).")
@_threads_option(None)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or stage lines; print only the summary.")
def run(stream, strategy, model, seed, device, steps, batch_size, pretrain_steps, options, encoders, stream_options,
        order, results_dir, cache_dir, restart, eval_limit, dtype, gradient_checkpointing, encoder_options,
        prompt_format, threads, quiet) -> None:
    """Run a strategy through a task stream and write its result file.

    Builds (once, cached) the stream's data and the pre-trained base model, evaluates
    every task before the first stage and after each stage, prints the accuracy matrix
    and metrics, and writes my-results/runs/<stream>/<strategy>/<model>-seed<N>-<key>.json
    (--results-dir; the published leaderboard's files under results/ stay as they are).
    Running the same command again after a crash resumes from the last finished stage.
    """
    from cl_bench.reporting.summary import format_summary

    try:
        from cl_bench.config import Budget
        from cl_bench.models.lm import PretrainConfig
        from cl_bench.run.runner import RunConfig
        from cl_bench.run.runner import run as run_stream

        _stream_class(stream)
        registry.strategies.entry(strategy)
        config = RunConfig(stream=stream, strategy=strategy, model=model, seed=seed, device=device,
                           budget=Budget(steps=steps, batch_size=batch_size),
                           pretrain=PretrainConfig(steps=pretrain_steps), strategy_options=_parse_options(options),
                           encoders=_encoders(encoders), stream_options=_stream_opts(stream_options), order=order,
                           results_dir=results_dir, cache_dir=cache_dir, eval_limit=eval_limit, dtype=dtype,
                           gradient_checkpointing=gradient_checkpointing, prompt_format=prompt_format,
                           encoder_options=_encoder_opts(encoder_options), threads=threads)
        result, path = run_stream(config, progress=not quiet, restart=restart,
                                  echo=lambda s: click.echo(s, err=True))
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(format_summary(result, path))
    if results_dir == USER_RESULTS:
        click.echo(f"(your runs go under {USER_RESULTS}/, apart from the published results/; "
                   f"`clbench leaderboard --results-dir {USER_RESULTS}` ranks them)")


@main.command()
@click.option("--stream", default="vision-audio", show_default=True, help="Task stream to plan for.")
@click.option("--strategy", "strategies", default="full-ft", show_default=True,
              help="Strategy to plan, several comma-separated, or all (every registered strategy).")
@click.option("--model", default="mixtral-tiny", show_default=True,
              help="A preset or a local checkpoint directory (only its config.json and tokenizer are read).")
@click.option("--device", default="auto", show_default=True, callback=_check_device,
              help="The device whose memory the plan is held against: auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Training examples per step.")
@click.option("--eval-batch-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Examples per evaluation batch.")
@click.option("--seq-len", default=None, type=click.IntRange(min=1),
              help="Tokens per training sequence [default: the stream's longest, input tokens included].")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A strategy option (repeatable; with one strategy).")
@_encoder_option
@_stream_options
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Precision of the frozen weights and the forwards (as for `clbench run`).")
@click.option("--gradient-checkpointing", is_flag=True, help="Plan with activation checkpointing.")
@_encoder_options_option
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data [default: $CLBENCH_CACHE or ~/.cache/clbench].")
@click.option("--memory-gb", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Hold the plan against this much device memory (GB, 1e9 bytes), e.g. a GPU this machine does "
                   "not have [default: the device's own].")
@click.option("--json", "as_json", is_flag=True, help="Print the plan(s) as JSON.")
def plan(stream, strategies, model, device, batch_size, eval_batch_size, seq_len, options, encoders, stream_options,
         order, dtype, gradient_checkpointing, encoder_options, cache_dir, memory_gb, as_json) -> None:
    """Before running: parameters (total, trainable, added, active per token), gradient, optimizer-state and
    activation bytes, the peak memory of a stage and whether it fits the device (cl_bench.run.plan).

    Nothing is trained and no weights are read: the LM is built on torch's meta device from its config.
    Every `clbench run` prints the same plan's line at its start.
    """
    import json

    try:
        from cl_bench.config import Budget
        from cl_bench.run.plan import human, plan_run
        from cl_bench.run.runner import RunConfig

        _stream_class(stream)
        names = sorted(registry.strategies.names()) if strategies == "all" else [
            s.strip() for s in strategies.split(",") if s.strip()]
        for n in names:
            registry.strategies.entry(n)
        if options and len(names) > 1:
            raise ValueError("-o/--option is for one strategy; plan the others without it")
        plans = []
        for n in names:
            config = RunConfig(stream=stream, strategy=n, model=model, device=device,
                               budget=Budget(batch_size=batch_size), strategy_options=_parse_options(options),
                               encoders=_encoders(encoders), stream_options=_stream_opts(stream_options), order=order,
                               cache_dir=cache_dir, eval_batch_size=eval_batch_size, dtype=dtype,
                               gradient_checkpointing=gradient_checkpointing,
                               encoder_options=_encoder_opts(encoder_options))
            plans.append(plan_run(config, seq_len=seq_len,
                                  capacity_bytes=None if memory_gb is None else int(memory_gb * 1e9)))
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps([p.record() for p in plans] if len(plans) > 1 else plans[0].record(), indent=2))
    elif len(plans) == 1:
        click.echo(plans[0].table())
    else:
        width = max(len(p.strategy) for p in plans)
        click.echo(f"{'strategy':<{width}}  {'trainable':>12}  {'added':>12}  {'peak':>9}  fits")
        for p in plans:
            fits = "?" if p.fits is None else ("yes" if p.fits else "NO")
            click.echo(f"{p.strategy:<{width}}  {p.parameters['trainable']:>12,}  {p.parameters['added']:>12,}  "
                       f"{human(p.peak):>9}  {fits}")
        click.echo(f"({plans[0].model}, {plans[0].dtype}, batch {plans[0].batch_size} x {plans[0].seq_len} tokens, "
                   f"on {plans[0].device})")


@main.command()
@click.option("--strategy", default=None,
              help="Strategy to check (built-in or a plug-in's name) [default: none, check the stream alone].")
@click.option("--stream", default="vision-audio", show_default=True, help="Task stream to run it on, or to check.")
@click.option("--steps", default=2, show_default=True, type=click.IntRange(min=1), help="Training steps per stage.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="A strategy option (repeatable).")
@_encoder_option
@_stream_options
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data and base models [default: $CLBENCH_CACHE or ~/.cache/clbench].")
def validate(strategy, stream, steps, options, encoders, stream_options, order, cache_dir) -> None:
    """Check a strategy against the contract on a tiny run (CPU, about a minute), or a stream alone.

    \b
    With --strategy: parameters the strategy declares frozen (Strategy.frozen) must be
    bit-identical after the run, its cost report must add up, and its result file must
    be complete. What it spends and keeps must match its declaration (Strategy.declares):
    the stage budget of training examples, past training or validation items, per-task
    weights, and whether the LM it answers with depends on the input's modality.
    Without: the stream must load and be well formed (a text base task, one task per
    registered modality, complete splits, answers in the answer set) and each task's
    encoder must read its inputs. Exits with 1 and lists the problems when one is found.
    """
    from cl_bench.run.validate import validate as check
    from cl_bench.run.validate import validate_stream

    what = strategy or f"stream {stream}"
    try:
        _stream_class(stream)
        if strategy:
            registry.strategies.entry(strategy)
            problems = check(strategy, stream, cache_dir, steps=steps, options=_parse_options(options),
                             stream_options=_stream_opts(stream_options), encoders=_encoders(encoders), order=order)
        else:
            if options:
                raise click.UsageError("-o/--option sets a strategy option; give --strategy too")
            problems = validate_stream(stream, _stream_opts(stream_options), _encoders(encoders), cache_dir, order)
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    if problems:
        click.echo(f"{what}: the contract is broken:\n" + "\n".join(f"  - {p}" for p in problems))
        sys.exit(1)
    if strategy:
        click.echo(f"{strategy}: the contract holds (frozen parameters unchanged, cost adds up, result complete, "
                   "budget and memory as declared)")
    else:
        click.echo(f"stream {stream}: well formed (tasks, splits and answers check; every encoder reads its inputs)")


@main.command(name="ls")
@click.option("-v", "--verbose", is_flag=True, help="Also list each strategy's options (imports the strategies).")
def ls(verbose) -> None:
    """List the registered strategies, task streams and modalities, one line each.

    Built-ins and third-party plug-ins (entry points in the groups clbench.strategies,
    clbench.streams and clbench.modalities) are listed alike, with the package that
    registered them.
    """
    broken = 0
    for title, reg in (("strategies", registry.strategies), ("streams", registry.streams),
                       ("modalities", registry.modalities)):
        click.echo(f"{title}:")
        entries, clashes = reg.entries(), reg.clashes()
        width = max((len(n) for n in [*entries, *clashes]), default=0) + 2
        for name in sorted([*entries, *clashes]):
            if name in clashes:  # refused, with both origins; every other name works
                broken += 1
                click.echo(f"  {name:<{width}}REFUSED: registered by "
                           + " and ".join(f"{e.target} ({e.origin})" for e in clashes[name]) + "; rename one")
                continue
            entry = entries[name]
            origin = "" if entry.origin == "package clbench" else f"  [{entry.origin}]"
            problem = entry.problem()
            if problem is not None:
                broken += 1
                click.echo(f"  {name:<{width}}BROKEN: {problem}{origin}")
                continue
            click.echo(f"  {name:<{width}}{entry.summary()}{origin}")
            if verbose:
                try:
                    for line in _ls_details(reg, name, entry):
                        click.echo(f"  {'':<{width}}  {line}")
                except (LookupError, TypeError, ValueError) as e:  # a plug-in that fails to load: say so, go on
                    broken += 1
                    click.echo(f"  {'':<{width}}  BROKEN: {e}")
    if broken:
        click.echo(f"{broken} registered name(s) cannot be used (marked above); the others work.", err=True)


def _ls_details(reg, name: str, entry) -> list[str]:
    """The lines `clbench ls -v` prints under one entry."""
    from cl_bench.config import check_config_class, describe

    lines = []
    if reg is registry.strategies:
        from cl_bench.api.strategy import Strategy

        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"{entry.target} is {cls!r}, not a cl_bench.Strategy subclass")
        check_config_class(cls.Config, f"strategy {name!r}")
        lines.append(f"declares: {_declaration_line(cls.declares)}")
        grid = getattr(cls, "tuning", None) or {}
        if grid:
            cited = (" (defaults: the choice in results/hparams/vision-audio.md)"
                     if entry.origin == "package clbench" else "")
            lines.append("tuning grid (clbench tune): "
                         + "; ".join(f"{k.replace('_', '-')} in {', '.join(v)}" for k, v in grid.items()) + cited)
        lines += [f"-o {opt}=... (default {default}) {help_}" for opt, default, help_ in describe(cls.Config)]
    elif reg is registry.streams:
        from cl_bench.streams.resolve import stream_class

        cls = stream_class(name)
        lines.append("tasks: " + ", ".join(f"{t} ({m})" for t, m in cls.tasks.items())
                     + "".join(f"; encoder {m}={e}" for m, e in cls.encoders.items()))
        lines += [f"-s {opt}=... (default {default}) {help_}" for opt, default, help_ in describe(cls.Config)]
    else:
        from cl_bench.streams.modality import get

        m = get(name)
        lines.append("encoders: " + ", ".join(
            f"{e}{' (default)' if e == m.default_encoder else ''} = {t}" for e, t in m.encoders.items()))
    return lines


def _declaration_line(d) -> str:
    """A strategy's Declaration in words, for `clbench ls -v`."""
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    return (f"past training items {yes(d.past_train)}, past validation items {yes(d.past_val)}, "
            f"per-task weights {yes(d.task_weights)}, LM chosen by modality at test {yes(d.modality_routed)}, "
            f"budget {d.budget} (at default options)")


def _write_readme(path: str, board) -> None:
    from pathlib import Path

    from cl_bench.reporting.leaderboard import readme_section, splice_readme
    from cl_bench.results import atomic_write_text

    text = Path(path).read_text(encoding="utf-8")
    atomic_write_text(path, splice_readme(text, readme_section(board)))
    click.echo(f"regenerated the leaderboard section of {path}", err=True)


def _device(name: str) -> str:
    from cl_bench.run.device import resolve_device

    return str(resolve_device(name))


def _board(results_dir, stream, sort, device):
    from cl_bench.reporting.leaderboard import build

    board = build(results_dir, stream=stream, sort=sort, device=_device(device))
    for path, why in board.skipped:
        click.echo(f"left out {path}: {why}", err=True)
    if not board.tables:
        raise click.ClickException(f"no finished result files under {results_dir}/runs; "
                                   "run `clbench run` (or `clbench publish`) first")
    return board


_results_option = click.option("--results-dir", default="results", show_default=True,
                               type=click.Path(file_okay=False), help="Directory holding runs/ of result files.")
_stream_option = click.option("--stream", default=None, help="Only this stream [default: every stream found].")
_device_option = click.option("--device", default="auto", show_default=True, callback=_check_device,
                              help="Where the metrics are computed: auto (the GPU where there is one), cpu, cuda.")


@main.command()
@_results_option
@_stream_option
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "html"]), default="md", show_default=True,
              help="Table format; html is one self-contained page with the table and the figures.")
@click.option("--sort", default="acc", show_default=True,
              help="Column to sort rows by (acc, bwt, fwt, forgetting, intransigence, retention:<task>, trainable, "
                   "added, train_seconds); best first.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of printing.")
@_device_option
@click.option("--readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Also regenerate the leaderboard section of this README (between its leaderboard markers).")
def leaderboard(results_dir, stream, fmt, sort, output, device, readme) -> None:
    """Print the leaderboard of every stream: one row per strategy, mean and 95% CI over seeds.

    Every metric is recomputed from the result files' accuracy matrices; nothing is
    re-run. Files that are unreadable, of a newer schema or from unfinished runs are
    named on stderr and left out.
    """
    from cl_bench.reporting.leaderboard import render
    from cl_bench.results import atomic_write_text

    try:
        board = _board(results_dir, stream, sort, device)
        figures = None
        if fmt == "html":
            from cl_bench.reporting.figures import render_figures

            figures = render_figures(board, _device(device))
        text = render(board, fmt, figures)
        if readme:
            _write_readme(readme, board)
    except (ValueError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--stream", default=None, help="Stream of the runs [default: the only stream with runs of both].")
@click.option("--metric", default="acc", show_default=True,
              help="Per-run metric: a leaderboard column (acc, bwt, fwt, forgetting, intransigence, retention:<task>, "
                   "trainable, train_seconds, ...) or a scalar of metrics.all_metrics (text_retention, "
                   "mean_retention, mean_plasticity, fwt_vs_chance).")
@_results_option
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0.5, 1, max_open=True),
              help="Confidence level of the interval; the test's alpha is 1 - level.")
@click.option("--order", default=None, metavar="TASKS",
              help="Compare runs made with this --order of the stream's new tasks (e.g. audio,vision) "
                   "[default: the stream's own order].")
@_device_option
def compare(a, b, stream, metric, results_dir, level, order, device) -> None:
    """Compare strategies A and B, paired by seed: is the difference real or a tie?

    A and B are strategy names (or leaderboard row labels, for a strategy run with
    several options). Runs with the same seed share the base model, projector init and
    data order, so the comparison uses the difference on each shared seed: its mean and
    paired-t interval, the paired t-test's p-value, the share of seeds A wins, and how
    many seeds the observed difference would need to be detected at 95% and 80% power.
    """
    from cl_bench.analysis import stats
    from cl_bench.reporting.leaderboard import _number, find_row

    try:
        board = _board(results_dir, stream, "acc", device)
        board.tables = [t for t in board.tables
                        if (t.default_order if order is None else ",".join(t.order) == order.replace(" ", ""))]
        tables = [t for t in board.tables if _has(t, a) and _has(t, b)] if len(board.tables) > 1 else board.tables
        if not tables:
            found = ", ".join(t.stream for t in board.tables)
            raise ValueError(f"no stream under {results_dir}/runs has finished runs of both {a!r} and {b!r} "
                             f"(streams: {found}); run the missing one with `clbench run`")
        if len(tables) > 1:
            raise ValueError(f"{a!r} and {b!r} both ran on streams {', '.join(t.stream for t in tables)}; "
                             "pick one with --stream")
        (table,) = tables
        row_a, row_b = find_row(table, a), find_row(table, b)
        cols = {c.key: c for c in table.columns}
        key = metric if metric in row_a.per_seed else {c.header.lower(): c.key for c in table.columns}.get(
            metric.lower(), metric)
        if key not in row_a.per_seed or key not in row_b.per_seed:
            known = ", ".join(k for k in row_a.per_seed if k in row_b.per_seed)
            raise ValueError(f"no per-run metric {metric!r} for both; choose --metric from: {known}")
    except (ValueError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    va, vb = row_a.per_seed[key], row_b.per_seed[key]
    shared = sorted(set(va) & set(vb))
    if len(shared) < 2:
        raise click.ClickException(
            f"{row_a.label} (seeds {_seeds(va)}) and {row_b.label} (seeds {_seeds(vb)}) share {len(shared)} seed(s) "
            f"on {table.stream}; a paired comparison needs at least 2: run the missing seeds with `clbench run --seed N`")
    col = cols.get(key)
    kind = col.kind if col else "percent" if key.endswith("_retention") else "score"
    res = stats.paired_comparison([va[s] for s in shared], [vb[s] for s in shared], level=level, alpha=1 - level)
    num = lambda v: _number(v, kind) if v >= 0 or kind in ("score", "percent") else f"{v:.3g}"  # noqa: E731
    width = max(len(row_a.label), len(row_b.label), 8) + 2
    click.echo(f"{table.stream}: {key} of {row_a.label} (A) and {row_b.label} (B) over {res.n} shared seeds "
               f"({', '.join(map(str, shared))})")
    click.echo(f"  {'seed':<6}{'A':>{width}}{'B':>{width}}{'A - B':>{width}}")
    for s in shared:
        click.echo(f"  {s:<6}{num(va[s]):>{width}}{num(vb[s]):>{width}}{num(va[s] - vb[s]):>{width}}")
    click.echo(f"  {'mean':<6}{num(res.mean_a):>{width}}{num(res.mean_b):>{width}}{num(res.mean_diff):>{width}}")
    click.echo(f"mean difference A - B: {num(res.mean_diff)}, {level:.0%} interval [{num(res.low)}, {num(res.high)}] "
               "(paired t)")
    click.echo(f"paired t-test: p = {res.p_value:.3g} (two-sided)")
    click.echo(f"P(A > B): {res.p_a_better:.2f} (share of shared seeds where A is higher, ties half)")
    click.echo(f"effect size d = {res.effect_size:.3g}; seeds to detect it at alpha {1 - level:.2g}: "
               f"{_needed(res.seeds_95)} at 95% power, {_needed(res.seeds_80)} at 80% power")
    better = "" if col is None or col.higher_is_better is None else \
        " (higher is better)" if col.higher_is_better else " (lower is better)"
    if res.p_value < 1 - level:
        hi, lo = (row_a.label, row_b.label) if res.mean_diff > 0 else (row_b.label, row_a.label)
        click.echo(f"verdict: {hi} > {lo} on {key}{better} (p={res.p_value:.3g})")
    else:
        click.echo(f"verdict: no significant difference: a tie at this number of seeds (p={res.p_value:.3g})")


def _has(table, name: str) -> bool:
    return any(r.label == name or r.strategy == name for r in table.rows)


def _seeds(values: dict) -> str:
    return ", ".join(map(str, sorted(values))) or "none"


def _needed(n) -> str:
    if n is None:
        return "n/a"
    return "never (no difference observed)" if n == float("inf") else str(n)


@main.command()
@_results_option
@_stream_option
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Where the figures go [default: RESULTS_DIR/figures].")
@_device_option
def plot(results_dir, stream, out_dir, device) -> None:
    """Draw the figures: per strategy, heatmaps of the accuracy and transfer matrices (each run and the mean);
    per stream, forgetting curves and Pareto plots of ACC against trainable parameters and train time.
    """
    from pathlib import Path

    from cl_bench.reporting.figures import draw

    try:
        board = _board(results_dir, stream, "acc", device)
        out = Path(out_dir) if out_dir else Path(results_dir) / "figures"
        figures = draw(board, out, _device(device))
    except (ValueError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    for stream_name, figs in figures.items():
        click.echo(f"{out / stream_name}: {len(figs)} figures")


def _sweep_configs(stream, strategies, seeds, orders, sets, encoders, stream_options, results_dir, cache_dir, steps,
                   batch_size, pretrain_steps, device, eval_limit, model, grid_file=None, threads=None) -> list:
    """The RunConfigs of a sweep's command line (and grid file, whose entries the command line overrides)."""
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig
    from cl_bench.engines.sweep import Grid, cells, load_grid_file

    doc = load_grid_file(grid_file) if grid_file else {}

    def listed(value, key, default):
        if value is not None:
            return value
        v = doc.get(key, default)
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    stream = listed(stream, "streams", "vision-audio")
    strategies = listed(strategies, "strategies", "all")
    seeds = listed(seeds, "seeds", "0,1,2,3,4")
    stream_names = registry.streams.names() if stream == "all" else [x.strip() for x in stream.split(",")]
    for n in stream_names:
        _stream_class(n)
    names = registry.strategies.names() if strategies == "all" else [x.strip() for x in strategies.split(",")]
    for n in names:
        registry.strategies.entry(n)
    order_list = list(orders) or [str(o) for o in doc.get("orders", ["default"])]
    order_list = [None if o.strip() == "default" else o.strip() for o in order_list]
    options = {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in doc.get("options", {}).items()}
    options.update(sets)
    enc = _encoders(encoders) if encoders else {str(k): str(v) for k, v in doc.get("encoders", {}).items()}
    sopts = _stream_opts(stream_options) if stream_options else {str(k): str(v) for k, v in
                                                                 doc.get("stream_options", {}).items()}
    steps = steps if steps is not None else int(doc.get("steps", 400))
    batch_size = batch_size if batch_size is not None else int(doc.get("batch_size", 32))
    pretrain_steps = pretrain_steps if pretrain_steps is not None else int(doc.get("pretrain_steps", 400))
    eval_limit = eval_limit if eval_limit is not None else doc.get("eval_limit")
    model = model if model is not None else str(doc.get("model", "mixtral-tiny"))
    device = device if device is not None else str(doc.get("device", "auto"))

    def make(**cell):
        return RunConfig(**cell, model=model, device=device, results_dir=results_dir, cache_dir=cache_dir,
                         budget=Budget(steps=steps, batch_size=batch_size),
                         pretrain=PretrainConfig(steps=pretrain_steps),
                         eval_limit=eval_limit, encoders=enc, stream_options=sopts, threads=threads)

    return cells(Grid(tuple(stream_names), tuple(names), _seed_list(seeds), tuple(order_list), options), make)


def _run_sweep(configs, engine, cache_dir, quiet: bool = False) -> list:
    """Sweep `configs`; the failed outcomes (listed on stderr)."""
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.engines.sweep import sweep

    logs = str(Path(cache_dir or default_cache_dir()) / "sweep-logs")
    outcomes = sweep(configs, engine, log_dir=logs, progress=not quiet and sys.stderr.isatty(),
                     echo=lambda line: click.echo(line, err=True))
    return [o for o in outcomes if o.status == "failed"]


@main.command()
@click.option("--grid", "grid_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A YAML grid: streams, strategies, seeds, orders, options (name: [values]), steps, batch_size, "
                   "pretrain_steps, eval_limit, encoders, stream_options, model, device; the command line "
                   "overrides it.")
@click.option("--stream", default=None, help="Streams, comma-separated, or all [default: vision-audio].")
@click.option("--strategies", default=None, help="Strategies, comma-separated, or all [default: all].")
@click.option("--seeds", default=None, help="Seeds, comma-separated [default: 0,1,2,3,4].")
@click.option("--order", "orders", multiple=True, metavar="default|TASKS|random:SEED",
              help="An order of each stream's new tasks (repeatable) [default: the stream's own].")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
              help="Values of a strategy option to sweep, e.g. --set lr=1e-4,3e-4 (repeatable; every combination, "
                   "for the strategies that have the option; the others run at their defaults).")
@click.option("--model", default=None, help="Base model: a preset or a local checkpoint [default: mixtral-tiny].")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Training steps per stage [default: 400].")
@click.option("--batch-size", default=None, type=click.IntRange(min=1), help="Examples per step [default: 32].")
@click.option("--pretrain-steps", default=None, type=click.IntRange(min=1),
              help="Pre-training steps of a preset base [default: 400].")
@click.option("--eval-limit", default=None, type=click.IntRange(min=1), metavar="N",
              help="Evaluate only the first N items of each test split [default: every item].")
@_encoder_option
@_stream_option_flag
@click.option("--results-dir", default=USER_RESULTS, show_default=True, type=click.Path(file_okay=False),
              help="Where every cell's result file goes.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data, base models, resumable runs and the cells' logs (shared by every worker) "
                   "[default: $CLBENCH_CACHE or ~/.cache/clbench].")
@click.option("--device", default=None, callback=lambda c, p, v: v if v is None else _check_device(c, p, v),
              help="Device of each run: auto, cpu, cuda or cuda:N [default: auto].")
@_engine_options
@_threads_option(None)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def sweep(grid_file, stream, strategies, seeds, orders, sets, model, steps, batch_size, pretrain_steps, eval_limit,
          encoders, stream_options, results_dir, cache_dir, device, engine, address, cpus_per_cell, gpus_per_cell,
          max_retries, threads, quiet) -> None:
    """Run a grid of runs, each cell a task: locally one after another, or on Ray (--engine ray).

    Cells whose complete result exists are skipped and a cell killed mid-run resumes from its last
    finished stage, so the same command can be run again at any time; a failed cell is listed at
    the end with its log and the others go on (exit status 1 if any failed).
    """
    try:
        configs = _sweep_configs(stream, strategies, seeds, orders, _grid_sets(sets), encoders, stream_options,
                                 results_dir, cache_dir, steps, batch_size, pretrain_steps, device, eval_limit, model,
                                 grid_file, threads=threads)
        failed = _run_sweep(configs, _engine(engine, address, cpus_per_cell, gpus_per_cell, max_retries), cache_dir,
                            quiet)
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    if failed:
        raise SystemExit(1)


@main.command()
@click.option("--stream", default="vision-audio", show_default=True,
              help="Task stream to run, or several, comma-separated (all: every registered stream).")
@click.option("--strategies", default="all", show_default=True,
              help="Comma-separated strategy names, or all (every registered strategy).")
@click.option("--seeds", default="0,1,2,3,4", show_default=True,
              help="Comma-separated seeds (five by default: the leaderboard's tiers and `clbench compare` pair runs "
                   "by seed).")
@click.option("--order", "orders", multiple=True, metavar="default|TASKS|random:SEED",
              help="An order of each stream's new tasks to run (repeatable: every strategy runs in every order "
                   "given, and the leaderboard reports the order effects) [default: the stream's own].")
@_encoder_option
@_stream_option_flag
@_results_option
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data, base models and resumable runs [default: $CLBENCH_CACHE or ~/.cache/clbench].")
@click.option("--steps", default=400, show_default=True, type=click.IntRange(min=1),
              help="Training steps per stage (the published leaderboard uses the default).")
@click.option("--pretrain-steps", default=400, show_default=True, type=click.IntRange(min=1),
              help="Pre-training steps of the base model (the published leaderboard uses the default).")
@click.option("--device", default="auto", show_default=True, callback=_check_device,
              help="Device of the runs and the metrics: auto (the GPU where there is one), cpu, cuda.")
@click.option("--eval-limit", default=None, type=click.IntRange(min=1), metavar="N",
              help="Evaluate only the first N items of each test split (a quick look; such runs get their own "
                   "key and leaderboard row) [default: every item].")
@click.option("--readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Also regenerate the leaderboard section of this README (between its leaderboard markers).")
@_engine_options
@_threads_option(2)
def publish(stream, strategies, seeds, orders, encoders, stream_options, results_dir, cache_dir, steps, pretrain_steps,
            device, eval_limit, readme, engine, address, cpus_per_cell, gpus_per_cell, max_retries, threads) -> None:
    """Run every stream x order x strategy x seed still missing (default settings), then write the
    leaderboard and figures: a sweep (`clbench sweep`) plus the leaderboard.

    Finished runs are reused, an interrupted one resumes, so the command can be run again
    at any time. Writes RESULTS_DIR/leaderboard.{md,csv,tex,html} and RESULTS_DIR/figures/,
    covering every stream with result files under RESULTS_DIR; if a run fails, the others go on,
    the failures are listed and nothing is written.
    """
    from pathlib import Path

    from cl_bench.reporting.leaderboard import render
    from cl_bench.reporting.figures import draw
    from cl_bench.results import atomic_write_text

    try:
        configs = _sweep_configs(stream, strategies, seeds, orders, {}, encoders, stream_options, results_dir,
                                 cache_dir, steps, None, pretrain_steps, device, eval_limit, "mixtral-tiny",
                                 threads=threads)
        if _run_sweep(configs, _engine(engine, address, cpus_per_cell, gpus_per_cell, max_retries), cache_dir,
                      quiet=True):
            raise click.ClickException("some runs failed (listed above); the leaderboard was not written")
        board = _board(results_dir, None, "acc", device)
        figures = draw(board, Path(results_dir) / "figures", _device(device))
        for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("html", "html")):
            atomic_write_text(Path(results_dir) / f"leaderboard.{ext}", render(board, fmt, figures))
        if readme:
            _write_readme(readme, board)
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {results_dir}/leaderboard.{{md,csv,tex,html}} and {results_dir}/figures/")


@main.command()
@click.option("--stream", default="vision-audio", show_default=True, help="Task stream to tune on.")
@click.option("--strategies", default="all", show_default=True,
              help="Comma-separated strategy names, or all (every registered strategy with a tuning grid).")
@click.option("--seeds", default="0,1", show_default=True, help="Comma-separated tuning seeds.")
@click.option("--results-dir", default="results/tuning", show_default=True, type=click.Path(file_okay=False),
              help="Where the tuning runs' result files go (apart from the leaderboard's).")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Report path without suffix; .json and .md are written [default: results/hparams/STREAM].")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache of data, base models and resumable runs [default: $CLBENCH_CACHE or ~/.cache/clbench].")
@click.option("--steps", default=400, show_default=True, type=click.IntRange(min=1), help="Training steps per stage.")
@click.option("--pretrain-steps", default=400, show_default=True, type=click.IntRange(min=1),
              help="Pre-training steps of the base model.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto, cpu or cuda.")
@click.option("--eval-limit", default=None, type=click.IntRange(min=1), metavar="N",
              help="Score only the first N items of each validation split (tests) [default: every item].")
@click.option("--readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Also write the summary table (grid, choice, runner-up) into this README between its "
                   "hparams markers.")
@_threads_option(2)
def tune(stream, strategies, seeds, results_dir, out, cache_dir, steps, pretrain_steps, device, eval_limit,
         readme, threads) -> None:
    """Choose each strategy's hyperparameters on validation data only, from its declared grid.

    Every grid point runs the stream for each seed with every evaluation on the validation
    splits (no test item is scored); the highest mean final validation ACC wins. Finished runs
    are reused. Writes the grid, every score and the choice to OUT.json and OUT.md.
    """
    import shlex
    from pathlib import Path

    from cl_bench import __version__

    from cl_bench.engines import tune as tuning
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig
    from cl_bench.run.runner import run as run_stream

    try:
        if strategies == "all":
            names = [n for n in registry.strategies.names() if getattr(registry.strategies.get(n), "tuning", None)]
        else:
            names = [s.strip() for s in strategies.split(",")]
        for n in names:
            registry.strategies.entry(n)
        seed_list = _seed_list(seeds)
        report = {"stream": stream, "seeds": list(seed_list), "clbench": __version__,
                  "command": "clbench tune " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["tune"] else "clbench tune",
                  "budget": {"steps": steps, "pretrain_steps": pretrain_steps, "eval_limit": eval_limit},
                  "strategies": {}}
        all_docs = []
        for n in names:
            def run_one(point, seed, n=n):
                click.echo(f"{n} {tuning.point_label(point)} seed {seed}", err=True)
                doc, _ = run_stream(RunConfig(stream=stream, strategy=n, seed=seed, device=device,
                                              results_dir=results_dir, cache_dir=cache_dir, budget=Budget(steps=steps),
                                              pretrain=PretrainConfig(steps=pretrain_steps), eval_split="val",
                                              eval_limit=eval_limit, strategy_options=dict(point),
                                              threads=threads),
                                    progress=False, reuse=True, wait=True, echo=lambda s: click.echo(s, err=True))
                all_docs.append(doc)
                return doc

            report["strategies"][n] = tuning.tune_strategy(n, run_one, seed_list)
            r = report["strategies"][n]
            click.echo(f"{n}: chosen {tuning.point_label(r['chosen'])}"
                       + ("" if r["defaults_match"] else f" (defaults now: {tuning.point_label(r['defaults_now'])})"))
        report["provenance"] = tuning.provenance(all_docs)
        path = Path(out) if out else Path("results") / "hparams" / stream
        tuning.write_report(report, path)
        if readme:
            from cl_bench.results import atomic_write_text

            text = Path(readme).read_text(encoding="utf-8")
            atomic_write_text(Path(readme), tuning.splice_readme(text, tuning.summary_markdown(report)))
    except (ValueError, TypeError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {path.with_suffix('.json')} and {path.with_suffix('.md')}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
