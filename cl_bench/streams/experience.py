"""Experiences and task streams: what a stage trains on and what the runner evaluates."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INPUT_MARKER = "<input>"  # where a prompt's modality tokens go; at the start when a prompt has none
MIXED = "+"  # a mixed-modality item's modality: its inputs' modalities joined, in prompt order ("image+audio")


def input_modalities(modality: str) -> tuple[str, ...]:
    """The modalities of an item's inputs, in prompt order: none for text, one, or a mixed item's ("image+audio")."""
    return () if modality == "text" else tuple(modality.split(MIXED))


def input_column(modality: str, i: int) -> str:
    """The split column that holds an item's i-th input: "input" (one input), "input_0", "input_1", ... (mixed)."""
    return "input" if MIXED not in modality else f"input_{i}"


def column(split, name: str) -> list:
    """A split's column as a list, read at once. A datasets.Dataset's `split[name]` is a lazy Column that formats
    row by row when iterated (about 20x slower on a few thousand rows, and every run reads its splits' columns
    several times); slicing it reads the Arrow column in one call. A dict of lists gives a copy of its list."""
    return split[name][:]


@dataclass(frozen=True)
class TaskInfo:
    """What a strategy may know about a task without seeing its data."""

    name: str  # "text", "vision", "audio", ...
    modality: str  # "text" or a registered modality (cl_bench.streams.modality)
    task: str  # what is asked, e.g. "number-questions"
    chance: float  # accuracy of guessing, averaged over the test items


@dataclass(frozen=True)
class Experience:
    """One stage of a stream: a task in one modality, with its splits.

    Splits are ``datasets.Dataset`` objects with columns ``prompt`` (the question, with
    INPUT_MARKER where the modality's tokens go), ``answer``, ``template`` and, for non-text modalities, ``input``
    (the raw image or waveform). ``test`` and ``probes`` are the runner's alone: a
    strategy receives ``without_test()``.
    """

    name: str
    modality: str
    task: str
    train: Any
    val: Any
    test: Any | None
    prompt_templates: Mapping[str, str]  # template id -> human-readable template
    answer_set: tuple[str, ...]
    chance: float
    probes: Mapping[str, Any] = field(default_factory=dict)  # extra evaluation sets, e.g. {"train": ...}

    def __post_init__(self) -> None:
        from cl_bench.streams import modality

        if self.modality not in modality.known():
            raise ValueError(f"Experience {self.name!r}: modality {self.modality!r} is not registered; known: "
                             f"{', '.join(modality.known())} (a plug-in registers more: group clbench.modalities)")
        if not 0.0 <= self.chance <= 1.0:
            raise ValueError(f"Experience {self.name!r}: chance must be in [0, 1], got {self.chance}")

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.name, self.modality, self.task, self.chance)

    def without_test(self) -> Experience:
        """The same experience with the test split and evaluation probes removed (what a strategy receives)."""
        return dataclasses.replace(self, test=None, probes={})

    def split(self, name: str):
        """The split `name` ("train", "val" or "test"); SplitWithheld for the test split of a strategy's view."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"task {self.name!r}: no split {name!r}; the splits are train, val and test")
        if name == "test" and self.test is None:
            raise SplitWithheld(f"task {self.name!r}: the test split is withheld from strategies (the runner alone "
                                "evaluates on it); train and val are the strategy's")
        return getattr(self, name)


class SplitWithheld(LookupError):
    """A strategy asked for a split it may not see (an experience's test split)."""


@dataclass(frozen=True)
class MixedProbe:
    """Mixed-modality items, evaluated after every stage and never learned: several inputs of different modalities
    in one prompt (an image and a spoken number: "the number is <input> . what is the number plus <input> ?").

    ``modality`` joins the inputs' modalities in prompt order ("image+audio"); ``test`` has columns ``prompt`` (with
    one INPUT_MARKER per input), ``answer``, ``template`` and ``input_0``, ``input_1``, ... A strategy answers them
    through ``model_for(info)``: one routed by modality composes its weights of those modalities (MMER: the union
    of their masks), or says what it does instead.
    """

    name: str
    modality: str
    task: str
    test: Any
    answer_set: tuple[str, ...]
    chance: float

    def __post_init__(self) -> None:
        from cl_bench.streams import modality

        parts = input_modalities(self.modality)
        unknown = [m for m in parts if m not in modality.known()]
        if len(parts) < 2 or unknown or "text" in parts:
            raise ValueError(f"mixed probe {self.name!r}: modality {self.modality!r} must join two or more registered "
                             f"non-text modalities with {MIXED!r} (e.g. image+audio)"
                             + (f"; not registered: {', '.join(unknown)}" if unknown else ""))
        if not 0.0 <= self.chance <= 1.0:
            raise ValueError(f"mixed probe {self.name!r}: chance must be in [0, 1], got {self.chance}")

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.name, self.modality, self.task, self.chance)


@dataclass(frozen=True)
class TaskStream:
    """The base text task whose retention is measured, then new modalities in order; optionally mixed-modality
    probes (`mixed`), evaluated after every stage like the tasks, never learned."""

    name: str
    base: Experience
    experiences: tuple[Experience, ...]
    mixed: tuple[MixedProbe, ...] = ()

    def __post_init__(self) -> None:
        if self.base.modality != "text":
            raise ValueError(f"stream {self.name!r}: the base task must be text, got {self.base.modality!r}")
        names = [t.name for t in (*self.tasks, *self.mixed)]
        if len(set(names)) != len(names):
            raise ValueError(f"stream {self.name!r}: task names must be unique, got {names}")
        for p in self.mixed:
            missing = [m for m in input_modalities(p.modality) if m not in self.modalities]
            if missing:
                raise ValueError(f"stream {self.name!r}: mixed probe {p.name!r} has inputs of {', '.join(missing)}, "
                                 "which no task of the stream learns")

    @property
    def tasks(self) -> tuple[Experience, ...]:
        """All evaluated tasks: the base text task first (column 0 of R)."""
        return (self.base, *self.experiences)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(e.modality for e in self.experiences)

    @property
    def order(self) -> tuple[str, ...]:
        """The new tasks' names, in the order they are learnt."""
        return tuple(e.name for e in self.experiences)

    def reordered(self, names) -> TaskStream:
        """The same stream with its new tasks learnt in the order `names` (each task once)."""
        by_name = {e.name: e for e in self.experiences}
        if sorted(names) != sorted(by_name):
            raise ValueError(f"stream {self.name!r}: an order must name each new task once ({', '.join(by_name)}); "
                             f"got {', '.join(names)}")
        return dataclasses.replace(self, experiences=tuple(by_name[n] for n in names))
