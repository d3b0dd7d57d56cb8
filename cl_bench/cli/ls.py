"""`clbench ls`: what is registered. Imports no torch unless -v asks for each strategy's options."""

from __future__ import annotations

import click

from cl_bench import registry
from cl_bench.errors import ClbenchError


@click.command(name="ls")
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
                    for line in _details(reg, name, entry):
                        click.echo(f"  {'':<{width}}  {line}")
                except (LookupError, TypeError, ValueError, ClbenchError) as e:  # a broken plug-in: say so, go on
                    broken += 1
                    click.echo(f"  {'':<{width}}  BROKEN: {e}")
    if broken:
        click.echo(f"{broken} registered name(s) cannot be used (marked above); the others work.", err=True)


def _details(reg, name: str, entry) -> list[str]:
    """The lines `clbench ls -v` prints under one entry."""
    from cl_bench.config import describe

    lines = []
    if reg is registry.strategies:
        from cl_bench.api.strategy import strategy_class

        cls = strategy_class(name)
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


COMMANDS = [ls]
