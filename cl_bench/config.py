"""Typed configuration: dataclasses with defaults, help and validation; CLI options map onto them."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Budget:
    """Training budget of every stage, shared by all strategies so that they compare fairly.

    A stage's budget is steps x batch_size training examples, all of a strategy's phases
    together (alignment, router tuning, fine-tuning, ...); a strategy that spends another
    amount says so in its Declaration and its result is labelled.
    """

    steps: int = field(default=400, metadata={"help": "optimizer steps per stage"})
    batch_size: int = field(default=32, metadata={"help": "examples per step"})
    warmup_fraction: float = field(default=0.03, metadata={"help": "fraction of steps of linear warmup"})

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"Budget.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"Budget.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"Budget.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    @property
    def examples(self) -> int:
        """Training examples a stage may see, all phases together: what every strategy gets."""
        return self.steps * self.batch_size


def _convert(raw: str, tp: Any, where: str):
    if isinstance(tp, str):
        tp = eval(tp, {}, {"int": int, "float": float, "str": str, "bool": bool})  # annotations are strings
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        tp = args[0]
    if typing.get_origin(tp) is typing.Literal:
        allowed = typing.get_args(tp)
        if raw not in allowed:
            raise ValueError(f"{where} must be one of {', '.join(map(str, allowed))}; got {raw!r}")
        return raw
    if tp is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where} must be true or false, got {raw!r}")
    try:
        return tp(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be of type {getattr(tp, '__name__', tp)}, got {raw!r}") from None


def from_options(cls, options: dict[str, str], owner: str):
    """Build dataclass `cls` from "key" -> "string value" options, converting by field type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in options.items():
        name = key.replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            known = ", ".join(fields) or "none"
            raise ValueError(f"{owner} has no option {key!r}.{hint} Its options: {known}")
        values[name] = _convert(raw, hints.get(name, str), f"{owner} option {key!r}") if isinstance(raw, str) else raw
    return cls(**values)


def describe(cls) -> list[tuple[str, str, str]]:
    """(name, default, help) for every field of dataclass `cls`."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name.replace("_", "-"), repr(default), f.metadata.get("help", "")))
    return out
