"""The kinds of error clbench reports, and how the command line shows each.

- UsageError (exit 2): the user asked for something that cannot be done as asked (a bad option, an unknown
  name, a malformed stream file); one line naming the problem and the fix.
- EnvironmentProblem (exit 1): the machine or its files stand in the way (a directory that cannot be written,
  a full disk, a damaged cache or state, no GPU); one line naming the path or device and the fix.
- RunFailed (exit 1): a run that was set up right did not finish (training diverged); one line, nothing false
  written.
- PluginError (exit 1): a plug-in (a strategy, stream or modality from an entry point) broke its contract or
  raised; named as the plug-in's bug, with its traceback.

Anything else that escapes is a bug in clbench and is shown with its traceback. The first three subclass
ValueError, so that code catching ValueError from clbench keeps working.
"""

from __future__ import annotations


class ClbenchError(Exception):
    """Base class of the errors clbench reports as one line (PluginError adds a traceback)."""

    exit_code = 1


class UsageError(ClbenchError, ValueError):
    """A request that cannot be done as asked: one line naming the problem and the fix (exit 2)."""

    exit_code = 2


class EnvironmentProblem(ClbenchError, ValueError):
    """The machine or its files stand in the way: one line naming the path or device and the fix (exit 1)."""


class RunFailed(ClbenchError, ValueError):
    """A run set up right did not finish (e.g. training diverged); nothing false was written (exit 1)."""


class PluginError(ClbenchError):
    """A plug-in broke its contract or raised: named as the plug-in's bug; its traceback is shown (exit 1).

    Args:
        plugin: what the plug-in is ("strategy 'o-lora' from my-package 0.1").
        message: what went wrong.
    """

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"{plugin}: {message}")
        self.plugin = plugin


def script_main(main) -> None:
    """Run a script's `main()` (the bench/ scripts) with clbench's errors shown as the command line shows them:
    one line and the kind's exit status, no traceback (a PluginError keeps its traceback)."""
    import sys

    try:
        main()
    except ClbenchError as e:
        if isinstance(e, PluginError):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
