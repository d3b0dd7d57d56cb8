"""Another stream's tasks, for a plug-in's own stream: reuse a registered stream's built tasks by its name."""

from __future__ import annotations

from pathlib import Path

from cl_bench.streams.experience import Experience


def stream_tasks(name: str, options: dict | None = None, cache_dir: Path | None = None,
                 progress: bool = False) -> dict[str, Experience]:
    """The built tasks of the stream registered as `name` (through the registry, as `clbench run --stream` finds
    it), task name -> Experience, the base text task first; e.g. ``stream_tasks("vision-audio")["vision"]``.

    Args:
        name: a registered stream's name (`clbench ls`) or a stream file.
        options: the stream's options (as ``--stream-option key=value``; strings are converted).
        cache_dir: where built data are cached (the stream's own cache: built once, then read).
        progress: show the build's progress.
    """
    from cl_bench.streams import resolve

    _, ts = resolve.load(name, options, cache_dir=cache_dir, progress=progress)
    return {t.name: t for t in ts.tasks}
