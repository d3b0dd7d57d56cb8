"""Joint training: the mix of tasks, the restart from the base, and resume."""

import dataclasses

import pytest
import torch

from cl_bench.config import Budget
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.base import load_base
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.strategies.joint import Joint, JointConfig
from cl_bench.api.strategy import RunContext

CPU = torch.device("cpu")


def make(stream, cache_dir, config=None, base=True):
    lm = load_base("mixtral-tiny", stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(lm.lm, lm.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat = Joint(config or JointConfig())
    strat.setup(model, RunContext(CPU, 0, Budget(steps=3, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False,
                                  base=stream.base.without_test() if base else None))
    return strat


@pytest.mark.slow
def test_each_stage_trains_on_text_and_every_modality_so_far(stream, cache_dir, monkeypatch):
    import cl_bench.api.training as engine

    strat = make(stream, cache_dir)
    seen = []
    real = engine.train
    monkeypatch.setattr(engine, "train", lambda model, data, *a, **k: seen.append(
        [d.modality for d in data]) or real(model, data, *a, **k))
    vision, audio = stream.experiences
    s1 = strat.learn(vision.without_test())
    s2 = strat.learn(audio.without_test())
    assert seen == [["text", "image"], ["text", "image", "audio"]]
    assert (s1["tasks"], s2["tasks"]) == (["text", "vision"], ["text", "vision", "audio"])
    assert (s1["steps"], s2["steps"]) == (3, 6)  # k x the budget at stage k
    assert strat.cost().trainable == strat.cost().total - sum(
        p.numel() for p in strat.model.encoders.parameters())  # LM and both projectors


@pytest.mark.slow
def test_a_stage_restarts_from_the_base_so_resume_gives_the_same_model(stream, cache_dir):
    vision, audio = (e.without_test() for e in stream.experiences)
    a = make(stream, cache_dir)
    a.learn(vision)
    a.learn(audio)
    b = make(stream, cache_dir)
    b.resumed([vision])  # what the runner does after loading stage 1's state
    b.learn(audio)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_continuing_from_the_previous_stage_is_an_option(stream, cache_dir):
    vision, audio = (e.without_test() for e in stream.experiences)
    a = make(stream, cache_dir, JointConfig(from_scratch=False, scale_steps=False))
    a.learn(vision)
    b = make(stream, cache_dir, JointConfig(from_scratch=False, scale_steps=False))
    b.resumed([vision])
    a.learn(audio)
    b.learn(audio)  # b starts from the base, a from its vision stage: they differ
    assert not torch.equal(a.model.lm.lm_head.weight, b.model.lm.lm_head.weight)


@pytest.mark.slow
def test_text_rehearsal_without_base_data_is_a_clear_error(stream, cache_dir):
    strat = make(stream, cache_dir, base=False)
    with pytest.raises(ValueError, match="include-text=false"):
        strat.learn(stream.experiences[0].without_test())
    strat = make(stream, cache_dir, JointConfig(include_text=False), base=False)
    assert strat.learn(stream.experiences[0].without_test())["tasks"] == ["vision"]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="lr must be > 0"):
        JointConfig(lr=0)
    assert dataclasses.asdict(JointConfig())["include_text"] is True
    with pytest.raises(ValueError, match="mix must be 'size' or 'equal'"):
        JointConfig(mix="balanced")


@pytest.mark.slow
def test_equal_mix_gives_each_task_the_same_share_of_batches(stream, cache_dir, monkeypatch):
    import cl_bench.api.training as engine

    mixes = []
    real = engine.train
    monkeypatch.setattr(engine, "train", lambda model, data, *a, **k: mixes.append(k.get("mix"))
                        or real(model, data, *a, **k))
    for mix in ("size", "equal"):
        strat = make(stream, cache_dir, JointConfig(mix=mix))
        strat.learn(stream.experiences[0].without_test())
    assert mixes == [None, [1.0, 1.0]]  # size: the train loop's default (proportional to the splits)
