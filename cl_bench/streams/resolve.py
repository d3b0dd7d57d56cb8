"""A stream by name: a registered Stream plug-in or a stream file (.yaml), made with its options and built."""

from __future__ import annotations

from pathlib import Path

from cl_bench import registry
from cl_bench.config import check_config_class, from_options
from cl_bench.errors import PluginError
from cl_bench.streams import files
from cl_bench.streams.base import Stream, build_checked, parse_order
from cl_bench.streams.experience import TaskStream


def stream_class(name: str) -> type[Stream]:
    """The Stream subclass registered as `name`, or built from the stream file `name` (.yaml/.yml)."""
    if files.is_stream_file(name):
        return files.stream_class(name)
    cls = registry.streams.get(name)
    plugin = registry.streams.label(name)  # a PluginError names it: each of these is the plug-in's to fix
    if not (isinstance(cls, type) and issubclass(cls, Stream)):
        raise PluginError(plugin, f"is {cls!r}, not a cl_bench.Stream subclass")
    if not cls.tasks:
        raise PluginError(plugin, f"declares no tasks: set {cls.__name__}.tasks = {{task name: modality, ...}}")
    if cls.build is Stream.build:
        raise PluginError(plugin, f"{cls.__name__} does not implement build(cache_dir, progress), which returns "
                          "its TaskStream")
    try:
        check_config_class(cls.Config, f"stream {name!r}")
    except TypeError as e:
        raise PluginError(plugin, str(e).removeprefix(f"stream {name!r}: ")) from e
    return cls


def make(name: str, options: dict | None = None) -> Stream:
    """The registered stream `name` with its options ("key" -> value; strings are converted)."""
    cls = stream_class(name)
    return cls(from_options(cls.Config, dict(options or {}), f"stream {name!r}"))


def load(name: str, options: dict | None = None, order: str | None = None, cache_dir: Path | None = None,
         progress: bool = True) -> tuple[Stream, TaskStream]:
    """The stream `name` (or stream file) with its options, and what it builds, checked (ValueError listing
    every problem), its new tasks in `order`. The stream's own order is `tuple(type(stream).tasks)`."""
    s = make(name, options)
    ts = build_checked(s, s.name, cache_dir, progress)
    return s, (ts.reordered(parse_order(order, ts)) if order else ts)


