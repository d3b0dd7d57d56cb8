"""`clbench validate` catches contract breakers from what the runner measures, not from what a strategy reports:
the budget trained, test data, undeclared past data, undeclared modality routing, a leaky stream, writes under HOME."""

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from datasets import Array2D, Dataset, Features, Value

from cl_bench import registry
from cl_bench.cli import main
from cl_bench.run import probe
from cl_bench.run.validate import (
    _empty_home,
    check_data_use,
    check_declaration,
    validate,
    validate_stream,
)
from cl_bench.streams.experience import Experience, SplitWithheld, TaskStream

TINY = {"steps": 5, "pretrain_steps": 5, "eval_limit": 8, "threads": 1}  # budget 20 examples a stage


def _split(prompts, answers, inputs=None) -> Dataset:
    cols = {"prompt": prompts, "answer": answers, "template": ["t"] * len(prompts)}
    if inputs is None:
        return Dataset.from_dict(cols)
    features = Features({**{k: Value("string") for k in cols}, "input": Array2D((2, 2), "float32")})
    return Dataset.from_dict({**cols, "input": inputs}, features=features)


def _task(name, modality, train, val, test) -> Experience:
    return Experience(name, modality, "q", train, val, test, {"t": "t"}, ("1", "2", "3"), 0.5)


def _image(v: float):
    return [[v, 0.0], [0.0, v]]


@pytest.fixture(scope="module")
def tiny_stream():
    """Text and image tasks whose image test split holds one image training item (same prompt, answer, input)."""
    text = _task("text", "text", _split(["a", "b"], ["1", "2"]), _split(["c"], ["3"]), _split(["d"], ["1"]))
    p = "<input> what?"
    image = _task("vision", "image", _split([p, p], ["1", "2"], [_image(1), _image(2)]),
                  _split([p], ["3"], [_image(3)]), _split([p, p], ["2", "2"], [_image(2), _image(9)]))
    return TaskStream("tiny", text, (image,))


def test_an_item_is_its_prompt_answer_and_input_whatever_holds_it(tiny_stream):
    image = tiny_stream.experiences[0]
    keys = probe.item_keys(image.train)
    # the same rows as plain Python columns (float64 numbers) name the same items as the float32 Dataset
    assert probe.item_keys(image.train.to_dict()) == keys
    assert len(set(keys)) == 2
    assert probe.item_keys(image.test)[0] == keys[1]  # the leaked item
    assert probe.item_keys(image.test)[1] not in keys  # same prompt and answer, another input
    assert probe.item_keys(_split(["a"], ["2"])) != probe.item_keys(tiny_stream.base.train)[:1]  # another answer


def test_a_test_split_that_holds_a_visible_item_is_reported(tiny_stream):
    assert probe.test_overlap(tiny_stream) == [
        ("the stream's test split vision/test shares 1 items (same prompt, answer and input) with the vision/train "
        "split, which strategies see: test items must never be trainable")]
    clean = TaskStream("tiny", tiny_stream.base, (_task("vision", "image", *(getattr(tiny_stream.experiences[0], s)
                                                                             for s in ("train", "val")),
                                                        _split(["<input> what?"], ["2"], [_image(7)])),))
    assert probe.test_overlap(clean) == []


def test_a_strategys_view_has_no_test_split(tiny_stream):
    from cl_bench.strategies.full_ft import FullFineTuning

    seen = tiny_stream.experiences[0].without_test()
    assert seen.split("train") is tiny_stream.experiences[0].train
    with pytest.raises(SplitWithheld, match="'vision': the test split is withheld from strategies"):
        seen.split("test")
    with pytest.raises(SplitWithheld, match="withheld"):
        FullFineTuning().data(seen, "test")


class _Data:
    """What the probe reads of a TaskData: its split."""

    def __init__(self, split) -> None:
        self.split = split


def test_the_probe_counts_the_rows_an_optimizer_steps_on(tiny_stream):
    text, image = tiny_stream.base, tiny_stream.experiences[0]
    training = [True]
    p = probe.Probe(lambda: training[0], probe.item_index(tiny_stream))
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    t, v = _Data(image.train), _Data(text.val)
    with p.watching():
        with torch.no_grad():
            p.batched(v, [0])  # an evaluation: read, not trained on
        training[0] = False
        p.batched(_Data(text.train), [0, 1])  # gradients on but the model in eval mode (a Fisher pass): not trained
        training[0] = True
        p.batched(t, [0, 1])
        p.batched(t, [1])  # two batches, one step (gradient accumulation): both trained on
        w.grad = torch.ones(1)
        opt.step()
        opt.step()  # a step with nothing batched since the last: not a step of training
        p.batched(t, [0])  # fetched, never stepped on
    opt.step()  # after the stage: not watched
    assert p.record() == {"steps": 1, "examples": 3, "trained": {"vision/train": 3},
                          "read": {"text/train": 2, "text/val": 1, "vision/train": 4}}


def _result(declaration: dict, measured: dict, examples: int = 20) -> dict:
    stage = {"experience": "vision", "memory": {},
             "training": {"examples": examples, "budget_examples": 20, "measured": measured}}
    return {"declaration": declaration, "stream": {"tasks": [{"name": n} for n in ("text", "vision", "audio")]},
            "stages": [stage]}


def test_the_budget_is_checked_against_what_the_runner_measured():
    honest = {"steps": 5, "examples": 20}
    assert check_declaration(_result({"budget": "equal"}, honest)) == []
    assert check_declaration(_result({"budget": "equal"}, {"steps": 10, "examples": 40})) == [
        ("stage vision: budget overrun: trained on 40 examples, the stage budget is 20 (measured by the runner); "
        "spend the budget, or declare what is spent instead (Declaration.budget)"),
        ("stage vision: records 20 training examples (Strategy.record_training) but the runner measured 40: record "
        "every phase as it is trained")]
    # another budget declared: no overrun, but what is recorded must still be what was trained
    assert check_declaration(_result({"budget": "2 x"}, {"steps": 10, "examples": 40}, examples=40)) == []


def test_data_use_is_checked_against_the_declaration():
    used = {"steps": 5, "examples": 20,
            "trained": {"vision/train": 12, "text/train": 4, "vision/test": 4},
            "read": {"vision/train": 12, "text/train": 4, "vision/test": 4, "text/val": 2, "audio/val": 1}}
    assert check_data_use(_result({}, used)) == [
        ("stage vision: the strategy used test items (vision/test: 4 batched; trained on vision/test: 4): strategies "
        "never see test data, the runner alone evaluates on it"),
        "stage vision: trains on earlier tasks' training items (text/train: 4) but does not declare past_train",
        "stage vision: uses earlier tasks' validation items (text/val: 2) but does not declare past_val",
        ("stage vision: uses items of tasks still to come (audio/val: 1): a stage learns from what the stream has "
        "shown so far")]
    fair = {"steps": 5, "examples": 20, "trained": {"vision/train": 16, "text/train": 4},
            "read": {"vision/train": 16, "text/train": 4, "text/val": 2, "vision/val": 8}}
    assert check_data_use(_result({"past_train": True, "past_val": True}, fair)) == []
    assert check_data_use(_result({}, {"steps": 5, "examples": 20})) == []  # measured without item identities


def test_writes_under_home_are_listed_and_home_is_restored():
    problems: list[str] = []
    home = os.environ.get("HOME")
    with _empty_home(problems):
        assert os.environ["HOME"] != home
        (Path.home() / ".cache" / "mine").mkdir(parents=True)
        (Path.home() / ".cache" / "mine" / "a.json").write_text("{}")
        (Path.home() / ".avalanche").mkdir()  # a library's own first-import file: not the run's
        (Path.home() / ".avalanche" / "config.json").write_text("{}")
    assert os.environ.get("HOME") == home
    assert problems == [("the run wrote 1 path(s) under HOME, outside the cache directory: ~/.cache/mine/a.json; "
                        "write only under the cache directory (cl_bench.streams.data.default_cache_dir, --cache-dir) "
                        "or a temporary one")]


@pytest.fixture
def breaker(cache_dir, small, tmp_path, monkeypatch):
    """validate() of a breaker from helpers_strategies on the small stream, registered for that call only."""
    import helpers_strategies

    monkeypatch.setattr(helpers_strategies.TestSplitTrainer, "cache_dir", cache_dir)

    def check(cls: str) -> list[str]:
        registry.strategies.register(cls.lower(), f"helpers_strategies:{cls}", origin="tests")
        try:
            return validate(cls.lower(), stream="small-numbers", cache_dir=str(cache_dir),
                            results_dir=str(tmp_path / cls), **TINY)
        finally:
            registry.strategies.unregister(cls.lower())

    return check


@pytest.mark.slow
@pytest.mark.parametrize("cls, rule, alone", [
    ("TestSplitTrainer", ("stage vision: the strategy used test items (vision/test: 20 batched; trained on "
                         "vision/test: 20): strategies never see test data"), ("used test items",)),
    ("SilentReplayer", "stage vision: trains on earlier tasks' training items (text/train: ",
     ("does not declare past_train",)),
    ("DoubleSpender", "stage audio: budget overrun: trained on 40 examples, the stage budget is 20",
     ("budget overrun", "but the runner measured 40")),
    ("LabelRouter", ("text items differ by the modality label of the batch (batch hooks)): the strategy routes by "
                    "modality at test time but does not declare modality_routed"), ("modality_routed",)),
    ("HomeWriter", ("the run wrote 2 path(s) under HOME, outside the cache directory: ~/.cache/home-writer/audio.json, "
                   "~/.cache/home-writer/vision.json"), ("under HOME",)),
])
def test_each_breaker_fails_validate_naming_its_rule(breaker, cls, rule, alone):
    problems = breaker(cls)
    assert any(rule in p for p in problems), problems
    assert all(any(a in p for a in alone) for p in problems), problems  # its own rule, no other


@pytest.mark.slow
def test_a_leaky_stream_fails_validate(cache_dir, small, tmp_path):
    registry.streams.register("leaky-numbers", "helpers_strategies:LeakyNumbers", origin="tests")
    try:
        leak = ("the stream's test split vision/test shares 4 items (same prompt, answer and input) with the "
                "vision/train split, which strategies see: test items must never be trainable")
        assert leak in validate_stream("leaky-numbers", cache_dir=str(cache_dir))
        problems = validate("full-ft", stream="leaky-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path),
                            **TINY)
        assert leak in problems
        assert not any("used test items" in p for p in problems)  # full-ft trains on its train split only
    finally:
        registry.streams.unregister("leaky-numbers")


@pytest.mark.slow
def test_a_breaker_fails_the_validate_command(cache_dir, small):
    registry.strategies.register("double-spender", "helpers_strategies:DoubleSpender", origin="tests")
    try:
        out = CliRunner().invoke(main, ["validate", "--strategy", "double-spender", "--stream", "small-numbers",
                                        "--steps", "5", "--cache-dir", str(cache_dir)])
    finally:
        registry.strategies.unregister("double-spender")
    assert out.exit_code == 1, out.output
    assert "budget overrun: trained on 40 examples, the stage budget is 20 (measured by the runner)" in out.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full-ft", "replay", "mmer", "moextend", "align-only"])
def test_built_in_strategies_pass(name, cache_dir, small, tmp_path):
    import json

    assert validate(name, stream="small-numbers", cache_dir=str(cache_dir), results_dir=str(tmp_path), **TINY) == []
    (path,) = (tmp_path / "runs").rglob("*.json")
    for stage in json.loads(path.read_text())["stages"]:
        measured = stage["training"]["measured"]
        assert measured["examples"] == stage["training"]["examples"] == 20
        assert measured["trained"].get(f"{stage['experience']}/train", 0) >= 15  # replay: 5 of 20 from its buffer
