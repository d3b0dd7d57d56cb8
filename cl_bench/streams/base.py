"""Task streams as plug-ins: the Stream base class, its options, the checks on load, and task order.

A stream plug-in subclasses Stream, names its options in a dataclass `Config` (given on the
command line as ``--stream-option key=value``) and builds a TaskStream: the base text task,
then tasks in new modalities (a modality may come back later with another task). Every stream
is checked when it is loaded (`check`), and any
order of its new tasks can be asked for (``--order audio,vision`` or ``--order random:3``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cl_bench.errors import ClbenchError, PluginError, UsageError
from cl_bench.streams.experience import INPUT_MARKER, TaskStream, column, input_column, input_modalities


@dataclass(frozen=True)
class NoOptions:
    """A stream without options."""


class Stream:
    """Base class of task streams.

    Subclasses set `name` (as registered) and `tasks` (new task name -> modality, in the
    order they are learnt), optionally `encoders` (modality -> encoder name, where the
    stream wants other than the modality's default) and `Config` (a frozen dataclass of
    options with defaults and field metadata {"help": ...}), and implement `build`.
    A stream that builds mixed-modality probes (TaskStream.mixed) names them in `mixed`
    (probe name -> modality, "image+audio"). The TaskStream it builds must match `tasks`
    and `mixed`; `clbench validate --stream NAME` checks it.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[dict[str, str]] = {}
    mixed: ClassVar[dict[str, str]] = {}
    encoders: ClassVar[dict[str, str]] = {}
    Config: ClassVar[type] = NoOptions

    def __init__(self, config=None) -> None:
        self.config = config if config is not None else self.Config()

    def build(self, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:  # pragma: no cover
        """The stream's tasks, with their data (built once and cached under cache_dir)."""
        raise NotImplementedError


def encoder_names(s: Stream, ts: TaskStream, overrides: dict | None = None) -> dict[str, str | None]:
    """Each new modality's encoder: one given on the command line (`overrides`), else the one the stream
    declares (Stream.encoders), else None (the modality's default)."""
    overrides = overrides or {}
    present = list(dict.fromkeys(ts.modalities))
    absent = [m for m in overrides if m not in present]
    if absent:  # an encoder nothing would use must not pass silently (nor change the run key)
        raise UsageError(f"--encoder {absent[0]}=...: stream {ts.name!r} has no {absent[0]} task; its modalities: "
                         f"{', '.join(present)}")
    return {m: overrides.get(m) or type(s).encoders.get(m) for m in present}


def changed_options(stream: Stream) -> dict:
    """The stream's options that differ from their defaults (what a run key needs)."""
    default = dataclasses.asdict(type(stream).Config())
    return {k: v for k, v in dataclasses.asdict(stream.config).items() if default.get(k) != v}


def build_checked(s: Stream, name: str, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:
    """`s.build(...)`, checked: a ValueError lists every problem of a malformed stream (a PluginError naming a
    registered stream, a UsageError for a stream file: the user's own)."""
    from cl_bench import registry

    def malformed(message: str):
        if name in registry.streams.entries():
            return PluginError(registry.streams.label(name), message)
        return UsageError(f"stream {name!r} {message}")

    try:
        ts = s.build(cache_dir, progress=progress)
    except (ValueError, TypeError) as e:  # e.g. an Experience or TaskStream refusing what build() made of it
        if isinstance(e, ClbenchError):
            raise
        raise malformed(f"build() failed: {type(e).__name__}: {e}") from e
    problems = check(ts, name)
    declared = dict(type(s).tasks)
    if not problems and declared and {e.name: e.modality for e in ts.experiences} != declared:
        problems.append(f"it declares the tasks {declared} (Stream.tasks) but builds "
                        f"{ {e.name: e.modality for e in ts.experiences} }")
    elif not problems and declared and list(declared) != list(ts.order):
        problems.append(f"it declares the order {', '.join(declared)} (Stream.tasks) but builds {', '.join(ts.order)}")
    built_mixed = {p.name: p.modality for p in ts.mixed}
    if not problems and built_mixed != dict(type(s).mixed):
        problems.append(f"it declares the mixed-modality probes {dict(type(s).mixed)} (Stream.mixed) but builds "
                        f"{built_mixed}")
    for m in type(s).encoders:
        if m not in declared.values():
            problems.append(f"Stream.encoders names modality {m!r}, which none of its tasks has")
    if problems:
        raise malformed("is malformed:\n" + "\n".join(f"  - {p}" for p in problems))
    return ts


def parse_order(spec: str, ts: TaskStream) -> tuple[str, ...]:
    """Task names in the order `spec` asks for: "audio,vision" (every new task once), or "random:SEED"."""
    return order_of(spec, [e.name for e in ts.experiences], ts.name)


def order_of(spec: str, names: list[str], stream: str) -> tuple[str, ...]:
    """The new tasks `names` of `stream` in the order `spec` asks for (checked before any data is built)."""
    spec = spec.strip()
    if spec.startswith("random:"):
        try:
            seed = int(spec.partition(":")[2])
        except ValueError:
            raise UsageError(f"--order {spec!r}: random needs an integer seed, e.g. --order random:3") from None
        out = list(names)
        random.Random(seed).shuffle(out)
        return tuple(out)
    got = [n.strip() for n in spec.split(",") if n.strip()]
    if sorted(got) != sorted(names):
        raise UsageError(f"--order {spec!r} must name each new task of stream {stream!r} once "
                         f"({','.join(names)}), or be random:SEED")
    return tuple(got)


def check(ts, name: str | None = None) -> list[str]:
    """Everything wrong with a built stream (an empty list when it is well formed)."""
    from cl_bench.streams import modality

    if not isinstance(ts, TaskStream):
        return [f"build() returned {type(ts).__name__}, not a cl_bench.TaskStream"]
    problems = []
    if name is not None and ts.name != name:
        problems.append(f"it calls itself {ts.name!r}; build() must return TaskStream(name={name!r}, ...)")
    if not ts.experiences:
        problems.append("it has no new-modality task after the base text task")
    # A modality may come back later in the stream with another task (its encoder and projector are shared by its
    # tasks): a strategy that chooses weights by modality must then keep two tasks of one modality apart. (Task
    # names are unique: TaskStream refuses two of one name.)
    known = modality.known()
    for e in ts.experiences:
        if e.modality == "text":
            problems.append(f"task {e.name!r}: a new task must be in a new modality, not text")
        if e.modality not in known:
            problems.append(f"task {e.name!r}: modality {e.modality!r} is not registered ({', '.join(known)})")
    for t in ts.tasks:
        for split_name in ("train", "val", "test"):
            split = getattr(t, split_name)
            where = f"task {t.name!r} {split_name} split"
            if split is None or not hasattr(split, "column_names"):
                problems.append(f"{where}: missing, or not a datasets.Dataset")
                continue
            if len(split) == 0:
                problems.append(f"{where}: empty")
            need = {"prompt", "answer", "template"} | ({"input"} if t.modality != "text" else set())
            missing = need - set(split.column_names)
            if missing:
                problems.append(f"{where}: no column {', '.join(sorted(missing))}")
                continue
            unknown = sorted(set(column(split, "answer")) - set(t.answer_set))
            if unknown:
                problems.append(f"{where}: answers outside the task's answer_set: {', '.join(map(repr, unknown[:5]))}")
            templates = sorted(set(column(split, "template")) - set(t.prompt_templates))
            if templates:
                problems.append(f"{where}: templates with no prompt_templates entry: {', '.join(templates[:5])}")
            if t.modality != "text" and len(split):
                if any(p.count(INPUT_MARKER) > 1 for p in column(split, "prompt")):
                    problems.append(f"{where}: a prompt holds {INPUT_MARKER} more than once")
    for p in ts.mixed:
        where = f"mixed probe {p.name!r} test split"
        parts = input_modalities(p.modality)
        need = {"prompt", "answer", "template"} | {input_column(p.modality, i) for i in range(len(parts))}
        missing = need - set(getattr(p.test, "column_names", ()))
        if missing:
            problems.append(f"{where}: no column {', '.join(sorted(missing))}")
            continue
        if not len(p.test):
            problems.append(f"{where}: empty")
        if any(q.count(INPUT_MARKER) != len(parts) for q in column(p.test, "prompt")):
            problems.append(f"{where}: every prompt must hold {INPUT_MARKER} once per input ({len(parts)} times)")
        unknown = sorted(set(column(p.test, "answer")) - set(p.answer_set))
        if unknown:
            problems.append(f"{where}: answers outside the probe's answer_set: {', '.join(map(repr, unknown[:5]))}")
    return problems
