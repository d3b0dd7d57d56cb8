"""One run: `clbench run`, `clbench plan` (its memory, before running) and `clbench validate` (the contract)."""

from __future__ import annotations

import sys

import click

from cl_bench import errors, registry
from cl_bench.cli import options as opt
from cl_bench.run.config import SCORINGS


@click.command()
@opt.stream()
@opt.field_option(opt.RunConfig, "strategy")
@opt.model()
@opt.field_option(opt.RunConfig, "seed", type=click.IntRange(min=0, max=opt.MAX_SEED))
@opt.device()
@opt.steps()
@opt.batch_size()
@opt.pretrain_steps()
@opt.base_seed()
@opt.strategy_options()
@opt.encoder
@opt.stream_and_order
@opt.results_dir()
@opt.cache_dir()
@click.option("--restart", is_flag=True, help="Ignore the saved state of an interrupted run and start over.")
@opt.eval_limit()
@opt.dtype()
@opt.field_option(opt.RunConfig, "gradient_checkpointing")
@opt.encoder_option
@opt.field_option(opt.RunConfig, "prompt_format", type=click.Choice(["plain", "chat"]))
@opt.threads()
@opt.field_option(opt.RunConfig, "max_hours", type=click.FloatRange(min=0, min_open=True))
@opt.field_option(opt.RunConfig, "ignore_plan")
@opt.field_option(opt.RunConfig, "scoring", type=click.Choice(SCORINGS))
@opt.field_option(opt.RunConfig, "max_new_tokens", type=click.IntRange(min=1, max=4096), metavar="N")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or stage lines; print only the summary.")
def run(stream, strategy, model, seed, device, steps, batch_size, pretrain_steps, base_seed, options, encoders, stream_options,
        order, results_dir, cache_dir, restart, eval_limit, dtype, gradient_checkpointing, encoder_options,
        prompt_format, threads, max_hours, ignore_plan, scoring, max_new_tokens, quiet) -> None:
    """Run a strategy through a task stream and write its result file.

    Builds (once, cached) the stream's data and the pre-trained base model, evaluates
    every task before the first stage and after each stage, prints the accuracy matrix
    and metrics, and writes my-results/runs/<stream>/<strategy>/<model>-seed<N>-<key>.json
    (--results-dir; the published leaderboard's files under results/ stay as they are).
    Running the same command again after a crash resumes from the last finished stage.
    """
    from cl_bench.config import Budget, PretrainConfig
    from cl_bench.reporting.summary import format_summary
    from cl_bench.run.runner import run as run_stream

    opt.check_stream(stream)
    registry.strategies.entry(strategy)
    config = opt.RunConfig(stream=stream, strategy=strategy, model=model, seed=seed, device=device,
                           budget=Budget(steps=steps, batch_size=batch_size),
                           pretrain=PretrainConfig(steps=pretrain_steps, seed=base_seed),
                           strategy_options=opt.parse_pairs(options), encoders=opt.encoders(encoders),
                           stream_options=opt.stream_opts(stream_options), order=order, results_dir=results_dir,
                           cache_dir=cache_dir, eval_limit=eval_limit, dtype=dtype,
                           gradient_checkpointing=gradient_checkpointing, prompt_format=prompt_format,
                           encoder_options=opt.encoder_opts(encoder_options), threads=threads,
                           max_hours=max_hours, ignore_plan=ignore_plan, scoring=scoring,
                           max_new_tokens=max_new_tokens)
    result, path = run_stream(config, progress=not quiet, restart=restart, echo=lambda s: click.echo(s, err=True))
    click.echo(format_summary(result, path))
    if results_dir == opt.USER_RESULTS:
        click.echo(f"(your runs go under {opt.USER_RESULTS}/, apart from the published results/; "
                   f"`clbench leaderboard --results-dir {opt.USER_RESULTS}` ranks them)")


@click.command()
@opt.stream(help="Task stream to plan for")
@opt.field_option(opt.RunConfig, "strategy", dest="strategies",
                  help="Strategy to plan, several comma-separated, or all (every registered strategy)")
@opt.model(help="A preset or a local checkpoint directory (only its config.json and tokenizer are read)")
@opt.device(help="The device whose memory the plan is held against: auto, cpu, cuda or cuda:N")
@opt.batch_size()
@opt.field_option(opt.RunConfig, "eval_batch_size", type=click.IntRange(min=1))
@click.option("--seq-len", default=None, type=click.IntRange(min=1),
              help="Tokens per training sequence [default: the stream's longest, input tokens included].")
@opt.strategy_options(help="A strategy option (repeatable; with one strategy).")
@opt.encoder
@opt.stream_and_order
@opt.dtype(help="Precision of the frozen weights and the forwards (as for `clbench run`)")
@opt.field_option(opt.RunConfig, "gradient_checkpointing", help="Plan with activation checkpointing")
@opt.encoder_option
@opt.cache_dir()
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

    from cl_bench.config import Budget
    from cl_bench.run.plan import human, plan_run

    opt.check_stream(stream)
    names = opt.names(strategies, sorted(registry.strategies.names()))
    for n in names:
        registry.strategies.entry(n)
    if options and len(names) > 1:
        raise errors.UsageError("-o/--option is for one strategy; plan the others without it")
    plans = []
    for n in names:
        config = opt.RunConfig(stream=stream, strategy=n, model=model, device=device,
                               budget=Budget(batch_size=batch_size), strategy_options=opt.parse_pairs(options),
                               encoders=opt.encoders(encoders), stream_options=opt.stream_opts(stream_options),
                               order=order, cache_dir=cache_dir, eval_batch_size=eval_batch_size, dtype=dtype,
                               gradient_checkpointing=gradient_checkpointing,
                               encoder_options=opt.encoder_opts(encoder_options))
        plans.append(plan_run(config, seq_len=seq_len,
                              capacity_bytes=None if memory_gb is None else int(memory_gb * 1e9)))
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


@click.command()
@click.option("--strategy", default=None,
              help="Strategy to check (built-in or a plug-in's name) [default: none, check the stream alone].")
@opt.stream(help="Task stream to run it on, or to check")
@opt.steps(default=2, help="Training steps per stage (a tiny run: the contract, not accuracy)")
@opt.strategy_options(help="A strategy option (repeatable).")
@opt.encoder
@opt.stream_and_order
@opt.cache_dir()
def validate(strategy, stream, steps, options, encoders, stream_options, order, cache_dir) -> None:
    """Check a strategy against the contract on a tiny run (CPU, about a minute), or a stream alone.

    \b
    With --strategy: parameters the strategy declares frozen (Strategy.frozen) must be
    bit-identical after the run, its cost report must add up, and its result file must
    be complete. What it spends and keeps must match its declaration (Strategy.declares):
    the stage budget of training examples, past training or validation items, per-task
    weights, and whether the LM it answers with depends on the input's modality or task.
    Without: the stream must load and be well formed (a text base task, tasks of
    registered modalities with unique names, complete splits, answers in the answer set)
    and each task's encoder must read its inputs. Exits with 1 and lists the problems when one is found.
    """
    from cl_bench.run.validate import validate as check
    from cl_bench.run.validate import validate_stream

    what = strategy or f"stream {stream}"
    opt.check_stream(stream)
    if strategy:
        registry.strategies.entry(strategy)
        problems = check(strategy, stream, cache_dir, steps=steps, options=opt.parse_pairs(options),
                         stream_options=opt.stream_opts(stream_options), encoders=opt.encoders(encoders), order=order)
    else:
        if options:
            raise click.UsageError("-o/--option sets a strategy option; give --strategy too")
        problems = validate_stream(stream, opt.stream_opts(stream_options), opt.encoders(encoders), cache_dir, order)
    if problems:
        click.echo(f"{what}: the contract is broken:\n" + "\n".join(f"  - {p}" for p in problems))
        sys.exit(1)
    if strategy:
        click.echo(f"{strategy}: the contract holds (frozen parameters unchanged, cost adds up, result complete, "
                   "budget and memory as declared)")
    else:
        click.echo(f"stream {stream}: well formed (tasks, splits and answers check; every encoder reads its inputs)")


COMMANDS = [run, plan, validate]
