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
