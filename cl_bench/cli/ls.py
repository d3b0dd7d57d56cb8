"""`clbench ls`: what is registered. Imports no torch unless -v asks for each strategy's options."""

from __future__ import annotations

import click

from cl_bench import registry
from cl_bench.errors import ClbenchError


@click.command(name="ls")
@click.option("-v", "--verbose", is_flag=True,
              help="Also list each strategy's options (imports the strategies), and where each refused or broken "
                   "entry points.")
def ls(verbose) -> None:
    """List the registered strategies, task streams and modalities, one line each.

    Built-ins and third-party plug-ins (entry points in the groups clbench.strategies,
    clbench.streams and clbench.modalities) are listed alike, with the package that
    registered them. An entry that cannot be used is marked REFUSED (its name clashes)
    or BROKEN (it cannot load), with the reason in one line; the others work.
    """
    marked = 0
    for title, reg in (("strategies", registry.strategies), ("streams", registry.streams),
                       ("modalities", registry.modalities)):
        click.echo(f"{title}:")
        entries, clashes, refused = reg.entries(), reg.clashes(), reg.refused()
        width = max((len(n) for n in [*entries, *clashes]), default=0) + 2
        for name in sorted([*entries, *clashes]):
            if name in clashes:  # refused, with every origin; every other name works
                marked += 1
                every = clashes[name]
                _echo(_mark(name, width, "REFUSED", "registered by " + " and ".join(e.who() for e in every)
                            + f": {'both' if len(every) == 2 else 'all'} refused; rename it in the entry points of "
                            + ("one" if len(every) == 2 else "all but one"), "", every, verbose))
                continue
            entry = entries[name]
            origin = "" if entry.dist == registry.BUILTIN_DIST else f"  [{entry.origin}]"
            problem = entry.problem()
            if problem is not None:
                marked += 1
                _echo(_mark(name, width, "BROKEN", problem, origin, [entry], verbose))
            else:
                click.echo(f"  {name:<{width}}{entry.summary()}{origin}")
                if verbose:
                    try:
                        _echo(f"  {'':<{width}}  {line}" for line in _details(reg, name, entry))
                    except Exception as e:  # noqa: BLE001 - a plug-in that fails to load: say so, go on
                        marked += 1
                        why = str(e) if isinstance(e, ClbenchError) else f"{type(e).__name__}: {e}"
                        click.echo(f"  {'':<{width}}  BROKEN: {why}")
            for other in refused.get(name, []):  # plug-ins refused for reusing this built-in's name
                marked += 1
                _echo(_mark(name, width, "REFUSED", reg.refusal(other), f"  [{other.origin}]", [other], verbose))
    if marked:
        click.echo(f"{marked} registered entr{'y' if marked == 1 else 'ies'} cannot be used (marked above); the "
                   "others work.", err=True)


def _echo(lines) -> None:
    for line in lines:
        click.echo(line)


def _mark(name: str, width: int, what: str, reason: str, origin: str, where, verbose: bool) -> list[str]:
    """The lines of an entry that cannot be used: its name, the mark (REFUSED, BROKEN) and the reason's first line;
    `verbose` adds the rest of the reason and where each entry involved points."""
    first, *rest = reason.strip().splitlines() or [""]
    lines = [f"  {name:<{width}}{what}: {first}{' ...' if rest and not verbose else ''}{origin}"]
    if verbose:
        lines += [f"  {'':<{width}}  {line}" for line in [*rest, *(f"points at {e.target} ({e.origin})" for e in where)]]
    return lines


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
        if cls.mixed:
            lines.append("mixed-modality probes (scored after every stage, never learned): "
                         + ", ".join(f"{t} ({m})" for t, m in cls.mixed.items()))
        lines += [f"-s {opt}=... (default {default}) {help_}" for opt, default, help_ in describe(cls.Config)]
    else:
        from cl_bench.streams.modality import get

        m = get(name)
        lines.append("encoders: " + ", ".join(
            f"{e}{' (default)' if e == m.default_encoder else ''} = {t}" for e, t in m.encoders.items()))
    return lines


def _declaration_line(d) -> str:
    """A strategy's Declaration in words, for `clbench ls -v`."""
    yes = lambda flag: "yes" if flag else "no"
    return (f"past training items {yes(d.past_train)}, past validation items {yes(d.past_val)}, "
            f"per-task weights {yes(d.task_weights)}, LM chosen by modality at test {yes(d.modality_routed)}, "
            f"LM chosen by task at test {yes(d.task_routed)}, budget {d.budget} (at default options)")


COMMANDS = [ls]
