"""Fault injection for the kill tests: ``CLBENCH_KILL_AT=<point>`` makes the process SIGKILL itself
when it reaches that point, the way a crash, an OOM kill or a pulled plug would stop it.

The points: ``build:<entry>`` (a cache entry written but not yet renamed into place),
``<training desc>:step<N>`` (before optimizer step N of a training loop, e.g. ``vision:step1``
or ``pre-training the base model:step2``), ``stage-saved:<N>`` (stage N's state saved, the next
stage not begun) and ``write:<file name>`` (a file's temporary copy written, not yet renamed).
With ``CLBENCH_KILL_ONCE=<file>`` too, the kill happens once: only while that file does not exist (it
is created just before), so that a retried task (a sweep's Ray worker) gets past the point.
Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here if CLBENCH_KILL_AT names this point (a trailing * matches any rest, e.g. ``build:audio-*``)."""
    at = os.environ.get("CLBENCH_KILL_AT")
    if at and (name == at or (at.endswith("*") and name.startswith(at[:-1]))):
        once = os.environ.get("CLBENCH_KILL_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # killed once already
        os.kill(os.getpid(), signal.SIGKILL)
