"""Typed configuration: dataclasses with defaults, help and validation; CLI options map onto them."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cl_bench.errors import UsageError


DEVICES = "auto, cpu, cuda or cuda:N"
DEFAULT_MODEL = "mixtral-tiny"  # the base model of a run: a preset of cl_bench.models.lm


def device_problem(name: str) -> str | None:
    """Why `name` is not a device clbench runs on (None when it is one): auto, cpu, cuda or cuda:N.
    Checked before torch is asked, whose own error for an unknown name is a traceback."""
    if name in ("auto", "cpu", "cuda"):
        return None
    head, _, index = name.partition(":")
    if head == "cuda" and index.isdigit():
        return None
    return f"{name!r} is not a device; use {DEVICES}"


@dataclass(frozen=True)
class Budget:
    """Training budget of every stage, shared by all strategies so that they compare fairly.

    A stage's budget is steps x batch_size training examples, all of a strategy's phases
    together (alignment, router tuning, fine-tuning, ...); a strategy that spends another
    amount says so in its Declaration and its result is labelled.
    """

    steps: int = field(default=400, metadata={"help": "training steps per stage"})
    batch_size: int = field(default=32, metadata={"help": "training examples per step"})
    warmup_fraction: float = field(default=0.03, metadata={"help": "fraction of steps of linear warmup"})

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UsageError(f"Budget.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError(f"Budget.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise UsageError(f"Budget.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    @property
    def examples(self) -> int:
        """Training examples a stage may see, all phases together: what every strategy gets."""
        return self.steps * self.batch_size


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training of a preset base model on the stream's text task."""

    # 800: the plateau of the text task's validation curve (results/base/curve.json, `clbench base curve`): 400 steps
    # left it at val 0.967 (loss 0.152), 800 reach 1.000 (0.007), 1600 add nothing the validation split can see.
    steps: int = field(default=800, metadata={
        "help": "pre-training steps of a preset base model (the shipped bases' count; another count is pre-trained "
                "once, then cached)"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    # 1e-3: at 2e-3 the base fits the text task as well (val 0.99 against 0.97) but is then hard to adapt:
    # the vision stage underfits its own training data (accuracy 0.55 against 0.91 in full-ft).
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (warmup, then cosine)"})
    seed: int = field(default=0, metadata={
        "help": "base seed: which base model of the preset (its initialisation and pre-training order; "
                "clbench ships base seeds 0, 1 and 2 of the default preset); --seed varies the fine-tuning only"})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError(f"PretrainConfig: steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"PretrainConfig.lr must be > 0, got {self.lr}")


_SCALARS = (int, float, str, bool)


def _resolve(tp: Any) -> Any:
    if isinstance(tp, str):
        tp = eval(tp, {}, {"int": int, "float": float, "str": str, "bool": bool})  # annotations are strings
    return tp


def supported(tp: Any) -> bool:
    """Whether an option of type `tp` can be given on the command line: int, float, str, bool, a Literal
    of such values, X | None of a supported X, or a tuple or list of scalars (tuple[int, ...], list[str],
    tuple[int, float]); the policy `from_options` holds strategy and stream configs to."""
    tp = _resolve(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return True
    if origin is typing.Literal:
        return all(isinstance(a, _SCALARS) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and len(args) == 2 and supported(rest[0])
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        return bool(items) and all(a in _SCALARS for a in items) and (origin is tuple or len(args) == 1)
    return False


def _convert(raw: str, tp: Any, where: str):
    tp = _resolve(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        for a in allowed:
            if raw == str(a) or (isinstance(a, bool) and raw.lower() == str(a).lower()):
                return a
        raise UsageError(f"{where} must be one of {', '.join(map(str, allowed))}; got {raw!r}")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        parts = [x.strip() for x in raw.split(",")] if raw.strip() else []
        if origin is tuple and Ellipsis not in args:  # a fixed-length tuple: one type per place
            if len(parts) != len(args):
                raise UsageError(f"{where} takes {len(args)} comma-separated values, got {raw!r}")
            return tuple(_convert(x, a, where) for x, a in zip(parts, args))
        values = [_convert(x, args[0], where) for x in parts]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where} must be true or false, got {raw!r}")
    try:
        value = tp(raw)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{where} must be of type {getattr(tp, '__name__', tp)}, got {raw!r}") from None
    if tp is float and not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, got {raw!r}")
    return value


def check_config_class(cls, owner: str) -> None:
    """Raise TypeError naming the problem unless `cls` is a dataclass whose every field has a type that
    options can set (see `supported`)."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{owner}: its Config is {cls!r}, not a dataclass; decorate it with @dataclasses.dataclass")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # a forward reference or a typo in an annotation
        raise TypeError(f"{owner}: the annotations of {cls.__name__} cannot be read ({e})") from None
    for f in dataclasses.fields(cls):
        if not supported(hints.get(f.name, str)):
            raise TypeError(f"{owner}: option {f.name!r} has type {hints.get(f.name)!r}, which options cannot set; "
                            "use int, float, str, bool, a Literal, X | None, or a tuple or list of int, float, "
                            "str or bool")


def from_options(cls, options: dict[str, str], owner: str):
    """Build dataclass `cls` from "key" -> "string value" options, converting by field type."""
    check_config_class(cls, owner)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in options.items():
        name = key.replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            known = ", ".join(fields) or "none"
            raise UsageError(f"{owner} has no option {key!r}.{hint} Its options: {known}")
        if name in values:
            raise UsageError(f"{owner} option {key!r} is given twice; give it once")
        values[name] = _convert(raw, hints.get(name, str), f"{owner} option {key!r}") if isinstance(raw, str) else raw
    try:
        return cls(**values)
    except ValueError as e:  # the Config's __post_init__ refused a value: the user's to fix, said in its words
        if isinstance(e, UsageError):
            raise
        raise UsageError(str(e)) from e


def describe(cls) -> list[tuple[str, str, str]]:
    """(name, default, help) for every field of dataclass `cls`."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name.replace("_", "-"), repr(default), f.metadata.get("help", "")))
    return out
