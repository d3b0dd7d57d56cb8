"""Two tasks of one modality in a stream: the check lets a modality come back, the per-modality strategies route by
modality (both tasks answered with the same weights) or, with -o route=task, by task (kept apart exactly), and
validate tells which one a strategy does from what it declares."""

import dataclasses
import json

import pytest
import torch

from cl_bench import registry
from cl_bench.api.strategy import Declaration
from cl_bench.run.validate import validate
from cl_bench.streams import base as streams
from cl_bench.streams import resolve

TINY = {"steps": 4, "pretrain_steps": 5, "eval_limit": 8, "threads": 1}
PER_MODALITY = ("adapter-per-modality", "lora-per-modality", "mmer")


@pytest.fixture(scope="module")
def two(cache_dir):
    """The small stream with two tasks of each modality (tests/helpers_streams.py), registered for this module."""
    registry.streams.register("small-two-tasks", "helpers_streams:SmallTwoTasks", origin="tests")
    yield resolve.load("small-two-tasks", cache_dir=cache_dir, progress=False)[1]
    registry.streams.unregister("small-two-tasks")


def test_the_stream_has_each_modality_twice_and_passes_the_check(two):
    assert [(e.name, e.modality) for e in two.experiences] == [
        ("vision", "image"), ("audio", "audio"), ("image-thickness", "image"), ("audio-rate", "audio")]
    assert streams.check(two) == []
    assert registry.streams.get("two-tasks-per-modality").tasks == {
        "vision": "image", "audio": "audio", "image-thickness": "image", "audio-rate": "audio"}


def test_two_tasks_with_one_name_are_refused(two):
    with pytest.raises(ValueError, match="task names must be unique"):
        dataclasses.replace(two, experiences=(*two.experiences, two.experiences[0]))


def test_the_declaration_routes_by_modality_or_by_task_never_both():
    assert Declaration(task_weights=True, task_routed=True).short() == "task weights, routed by task"
    assert Declaration(modality_routed=True).short() == "routed by modality"
    with pytest.raises(ValueError, match="routes by modality or by task, not both"):
        Declaration(modality_routed=True, task_routed=True)


def result(root) -> dict:
    (path,) = root.rglob("*.json")
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_MODALITY)
def test_per_modality_strategies_route_by_modality_or_by_task_as_declared(name, two, cache_dir, tmp_path):
    """validate (its routing probe included) passes at both routes, and each declares what it does."""
    for route, flags in (("modality", (True, False)), ("task", (False, True))):
        problems = validate(name, stream="small-two-tasks", cache_dir=str(cache_dir),
                            results_dir=str(tmp_path / route), options={"route": route}, **TINY)
        assert problems == [], (route, problems)
        d = result(tmp_path / route)["declaration"]
        assert (d["modality_routed"], d["task_routed"]) == flags, route


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adapter-per-modality", "lora-per-modality"])
def test_routing_by_task_keeps_a_modalitys_first_task_exactly(name, two, cache_dir, tmp_path):
    """With route=task the image task's adapter and projector copy are never trained again, so its items are
    answered exactly as right after its stage; with route=modality the second image task trains them on."""
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    docs = {}
    for route in ("modality", "task"):
        doc, _ = run(RunConfig(stream="small-two-tasks", strategy=name, device="cpu", threads=1,
                               budget=Budget(steps=6, batch_size=8), pretrain=PretrainConfig(steps=5),
                               strategy_options={"route": route}, eval_limit=16, cache_dir=str(cache_dir),
                               results_dir=str(tmp_path / route)), progress=False, echo=lambda s: None)
        docs[route] = doc
    vision = 1  # column of the first image task; rows: before any stage, then after each of the 4 stages
    by_task = docs["task"]["item_results"]["rows"]
    assert by_task[1][vision] == by_task[2][vision] == by_task[3][vision] == by_task[4][vision]
    assert docs["task"]["stages"][-1]["memory"]["task_weight_bytes"] > \
        docs["modality"]["stages"][-1]["memory"]["task_weight_bytes"]  # two more adapter sets, two projector copies


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_MODALITY)
def test_a_modalitys_tasks_share_weights_by_modality_and_not_by_task(name, two, cache_dir):
    """After the whole stream: by modality, vision and image-thickness get the same LM and projector (the same
    logits); by task, different ones; and a state saved and loaded answers every task as before."""
    from cl_bench.api.training import TaskData
    from cl_bench.config import Budget
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.run.base import load_base
    from cl_bench.api.strategy import RunContext, strategy_class

    cpu = torch.device("cpu")

    def make(route):
        base = load_base("mixtral-tiny", two, cpu, cache_dir, PretrainConfig(steps=5), progress=False)
        torch.manual_seed(0)
        model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
        cls = strategy_class(name)
        strat = cls(cls.Config(route=route, **({"alphas": "1.0", "lambdas": "0.5"} if name == "mmer" else {})))
        strat.setup(model, RunContext(cpu, 0, Budget(steps=3, batch_size=4), two.name,
                                      tuple(t.info for t in two.tasks), progress=False))
        return strat

    image = TaskData(two.experiences[0].val.select(range(4)), make("modality").model, "image").batch(range(4))

    def logits(strat, task):
        model = strat.model_for(task.info)
        model.eval()
        with torch.no_grad():
            return model(image).logits

    vision, thickness = two.experiences[0], two.experiences[2]
    for route in ("modality", "task"):
        strat = make(route)
        for e in two.experiences:
            strat.learn(e.without_test())
        same = torch.equal(logits(strat, vision), logits(strat, thickness))
        assert same == (route == "modality"), route
        again = make(route)
        again.load_state_dict(strat.state_dict())
        for t in two.tasks[1:]:
            assert torch.equal(logits(strat, t), logits(again, t)), (route, t.name)


@pytest.mark.slow
@pytest.mark.parametrize("cls, route, rule", [
    ("TaskRouterSaysModality", "task", "items differ between vision and image-thickness, both image): the strategy "
                                       "routes by task at test time but does not declare task_routed"),
    ("ModalityRouterSaysTask", "modality", "declares task_routed, but its LM answers two tasks of one modality the "
                                           "same: it routes by modality (declare modality_routed)"),
])
def test_validate_names_routing_that_differs_from_the_declaration(cls, route, rule, two, cache_dir, tmp_path):
    registry.strategies.register(cls.lower(), f"helpers_strategies:{cls}", origin="tests")
    try:
        problems = validate(cls.lower(), stream="small-two-tasks", cache_dir=str(cache_dir),
                            results_dir=str(tmp_path), options={"route": route}, **TINY)
    finally:
        registry.strategies.unregister(cls.lower())
    assert any(rule in p for p in problems), problems
