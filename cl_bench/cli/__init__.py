"""The `clbench` command line: the command group, how an error is shown, and `main`.

The commands live one group to a module (run.py: run, plan, validate; sweep.py: sweep, publish, tune;
report.py: leaderboard, compare, plot; ls.py: ls); an option that sets a config field is built from the field
(options.py). Nothing here imports torch: a command imports what it needs when it runs.
"""

from __future__ import annotations

import errno
import os
import traceback

import click

from cl_bench import __version__, errors

_OS_FIXES = {errno.EACCES: "make it writable (or readable), or choose another directory",
             errno.EPERM: "make it writable (or readable), or choose another directory",
             errno.EROFS: "choose a directory on a writable file system",
             errno.ENOSPC: "free some disk space, or choose a directory on another disk",
             errno.EDQUOT: "free some disk space, or choose a directory on another disk",
             errno.ENOENT: "check the path"}


class _OneLine(click.ClickException):
    """An error shown as "Error: <message>", with its kind's exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def os_message(e: OSError) -> str:
    """One line for an error of the machine: the path, what happened and what to do."""
    where = f"{e.filename}: " if e.filename else ""
    fix = _OS_FIXES.get(e.errno, "check the path and the disk; --debug shows where")
    return f"{where}{e.strerror or e}; {fix}"


def whose_bug(e: BaseException) -> str:
    """The last line under a bug's traceback: the plug-in that raised it (a PluginError names it; otherwise the
    innermost frame outside the libraries decides), or clbench."""
    from cl_bench import registry

    plugin = getattr(e, "plugin", None) if isinstance(e, errors.PluginError) else None
    if plugin is None:
        for frame, _ in reversed(list(traceback.walk_tb(e.__traceback__))):
            module = frame.f_globals.get("__name__", "")
            plugin = registry.plugin_of(module, getattr(frame.f_code, "co_qualname", frame.f_code.co_name))
            if plugin is not None or module.split(".")[0] == "cl_bench":
                break  # a plug-in's code, or clbench's own; any other frame is a library's
    if plugin is not None:
        return f"this is a bug in plug-in {plugin}; report it to its authors"
    return "this is a bug in clbench; please report it with the traceback above"


def show(e: Exception, debug: bool) -> None:
    """End the command for `e`: one line for what the user or the machine can fix (UsageError exits 2, an
    EnvironmentProblem, a RunFailed or an OSError 1), the traceback and whose bug it is for anything else (1).
    `debug` shows the traceback of every kind."""
    one_line = isinstance(e, (errors.ClbenchError, OSError)) and not isinstance(e, errors.PluginError)
    if debug or not one_line:
        click.echo("".join(traceback.format_exception(e)).rstrip("\n"), err=True)
    if isinstance(e, OSError) and not isinstance(e, errors.ClbenchError):
        raise _OneLine(os_message(e), 1) from None
    if one_line:
        raise _OneLine(str(e), e.exit_code) from None
    click.echo(whose_bug(e), err=True)
    raise click.exceptions.Exit(1)


class _Main(click.Group):
    """The command group: each error ends in the way its kind asks for (cl_bench.errors, `show`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: a usage error (exit 2), --help, an exit status the command chose
        except Exception as e:  # noqa: BLE001 - each kind is shown as `show` says
            show(e, bool((ctx.obj or {}).get("debug")) or os.environ.get("CLBENCH_DEBUG") == "1")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clbench")
@click.option("--debug", is_flag=True, help="Show the traceback of every error, also of those shown in one line.")
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


def _add_commands() -> None:
    from cl_bench.cli import base, ls, report, reproduce, run, sweep

    for module in (run, sweep, report, ls, base, reproduce):
        for command in module.COMMANDS:
            main.add_command(command)


_add_commands()
