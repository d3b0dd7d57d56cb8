import dataclasses
import typing

import pytest

from cl_bench.config import Budget, describe, from_options
from cl_bench.strategies.full_ft import FullFineTuningConfig


def test_options_are_converted_by_field_type():
    cfg = from_options(FullFineTuningConfig, {"lr": "1e-4", "projector-lr": "0.01"}, "strategy 'full-ft'")
    assert cfg == FullFineTuningConfig(lr=1e-4, projector_lr=0.01)


def test_unknown_option_names_the_known_ones():
    with pytest.raises(ValueError, match=r"has no option 'lrr'\. Did you mean lr\?.*projector_lr"):
        from_options(FullFineTuningConfig, {"lrr": "1"}, "strategy 'full-ft'")


def test_bad_value_names_field_and_type():
    with pytest.raises(ValueError, match="option 'lr' must be of type float, got 'fast'"):
        from_options(FullFineTuningConfig, {"lr": "fast"}, "strategy 'full-ft'")


def test_validation_names_the_field():
    with pytest.raises(ValueError, match=r"FullFineTuningConfig\.lr must be > 0"):
        FullFineTuningConfig(lr=0)
    with pytest.raises(ValueError, match=r"Budget\.steps must be >= 1"):
        Budget(steps=0)


def test_describe_lists_every_field_with_help():
    rows = describe(FullFineTuningConfig)
    assert [r[0] for r in rows] == ["lr", "projector-lr", "align-fraction", "align-lr"]
    assert all(r[2] for r in rows)


@dataclasses.dataclass
class _Kinds:
    layers: tuple[int, ...] = ()
    pair: tuple[int, float] = (0, 0.0)
    names: list[str] = dataclasses.field(default_factory=list)
    k: typing.Literal[1, 2] = 1
    flag: bool = False
    steps: int | None = None


def test_tuple_list_literal_and_optional_options_are_parsed_by_type():
    cfg = from_options(_Kinds, {"layers": "0, 1", "pair": "3,0.5", "names": "a,b", "k": "2", "flag": "yes",
                                "steps": "none"}, "strategy 'x'")
    assert cfg == _Kinds(layers=(0, 1), pair=(3, 0.5), names=["a", "b"], k=2, flag=True, steps=None)
    assert from_options(_Kinds, {"layers": "", "steps": "7"}, "s") == _Kinds(layers=(), steps=7)
    with pytest.raises(ValueError, match="option 'pair' takes 2 comma-separated values, got '1'"):
        from_options(_Kinds, {"pair": "1"}, "s")
    with pytest.raises(ValueError, match="option 'layers' must be of type int, got 'x'"):
        from_options(_Kinds, {"layers": "0,x"}, "s")
    with pytest.raises(ValueError, match="option 'k' must be one of 1, 2; got '3'"):
        from_options(_Kinds, {"k": "3"}, "s")


def test_an_option_given_twice_or_a_non_finite_number_is_refused():
    with pytest.raises(ValueError, match="option 'projector_lr' is given twice"):
        from_options(FullFineTuningConfig, {"projector-lr": "0.1", "projector_lr": "0.2"}, "strategy 'full-ft'")
    for raw in ("inf", "nan", "-inf"):
        with pytest.raises(ValueError, match=f"option 'lr' must be a finite number, got '{raw}'"):
            from_options(FullFineTuningConfig, {"lr": raw}, "strategy 'full-ft'")


def test_a_config_options_cannot_set_is_refused_when_loaded_naming_the_field():
    @dataclasses.dataclass
    class Nested:
        table: dict[str, int] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="strategy 'x': option 'table' has type .*which options cannot set"):
        from_options(Nested, {}, "strategy 'x'")

    class NotADataclass:
        lr: float = 0.1

    with pytest.raises(TypeError, match="strategy 'x': its Config is .*not a dataclass; decorate it"):
        from_options(NotADataclass, {}, "strategy 'x'")
